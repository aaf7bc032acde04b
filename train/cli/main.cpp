// seqmix: train, evaluate, inspect, sample from and sweep sequence models.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <iostream>
#include <string>

#include "train/cmd_logits.h"
#include "train/commands.h"
#include "train/distributed.h"
#include "train/plot_command.h"
#include "train/sweep.h"

namespace {

// A number option's lower bound, said plainly: CLI11's PositiveNumber and NonNegativeNumber
// report "Value 0 not in range 0 to 1.79769e+308".
CLI::Validator at_least(int64_t lo) {
  const std::string bound = std::to_string(lo);
  return CLI::Validator(
      [lo, bound](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
        if (!(v >= static_cast<double>(lo))) return "must be at least " + bound + ", got " + s;
        return std::string();
      },
      ">=" + bound);
}

int run(int argc, char** argv) {
  using namespace seqmix;
  CLI::App app{"seqmix: efficient sequence models (attention, linear attention, GLA, H3, Mamba) on the CPU"};
  app.require_subcommand(1);

  TrainArgs train_args;
  auto* train = app.add_subcommand("train", "Train a model from a YAML config (or resume a run)");
  train->add_option("CONFIG", train_args.config_path, "YAML config file")->check(CLI::ExistingFile);
  train->add_option("--set", train_args.overrides, "Override a config key: --set model.d_model=64 (repeatable)")
      ->take_all()
      ->allow_extra_args(false);
  train->add_option("--out", train_args.out_dir, "Run directory (default: runs/<config name>)");
  train->add_option("--resume", train_args.resume_dir, "Continue the run in DIR from its checkpoint")
      ->check(CLI::ExistingDirectory);
  train->add_option("--init-from", train_args.init_from,
                    "Start from the weights of this checkpoint (names and shapes must match CONFIG's model; "
                    "fresh optimizer)")
      ->check(CLI::ExistingFile);

  EvalArgs eval_args;
  auto* eval = app.add_subcommand("eval", "Loss and accuracy of a checkpoint on its task or a text file, as JSON");
  eval->add_option("CHECKPOINT", eval_args.checkpoint, "checkpoint.h5 or a run directory")->required();
  eval->add_option("--set", eval_args.overrides, "Override a config key, e.g. --set data.path=other.txt")
      ->take_all()
      ->allow_extra_args(false);

  std::string info_path;
  auto* info = app.add_subcommand("info", "Config, tensors, parameter count and recurrent state size of a checkpoint");
  info->add_option("CHECKPOINT", info_path, "checkpoint.h5 or a run directory")->required();

  SampleArgs sample_args;
  auto* sample = app.add_subcommand("sample", "Generate from a checkpoint through the recurrent forms");
  sample->add_option("CHECKPOINT", sample_args.checkpoint, "checkpoint.h5 or a run directory")->required();
  sample->add_option("--prompt", sample_args.prompt, "Prompt text (token ids for a recall-task model)")->required();
  sample->add_option("--max-new-tokens", sample_args.options.max_new_tokens, "Tokens to generate")
      ->check(at_least(0));
  sample->add_option("--temperature", sample_args.options.temperature, "0 is greedy")->check(at_least(0));
  sample->add_option("--top-k", sample_args.options.top_k, "Sample among the k most likely (0: all)")
      ->check(at_least(0));
  sample->add_option("--seed", sample_args.options.seed, "Sampling seed");

  LogitsArgs logits_args;
  auto* logits = app.add_subcommand("logits", "Logits of a token sequence under a checkpoint, as JSON or .npy");
  logits->add_option("CHECKPOINT", logits_args.checkpoint, "checkpoint.h5 or a run directory")->required();
  logits->add_option("--tokens", logits_args.tokens, "Token ids, e.g. 1,2,3");
  logits->add_option("--tokens-file", logits_args.tokens_file, "A file of token ids (commas or whitespace)")
      ->check(CLI::ExistingFile);
  logits->add_option("--text", logits_args.text, "Text, encoded with the checkpoint's tokenizer");
  logits->add_option("--npy", logits_args.npy, "Write the (L, V) float32 logits to this .npy file, not the JSON");
  logits->add_flag("--recurrent", logits_args.recurrent, "Feed one token at a time through the recurrent forms");

  SweepArgs sweep_args;
  auto* sweep = app.add_subcommand("sweep", "Run a grid of experiments and collect results.csv");
  sweep->add_option("SWEEP", sweep_args.sweep_path, "Sweep YAML: base config + grid")->required()->check(CLI::ExistingFile);
  sweep->add_option("--jobs", sweep_args.jobs, "Runs in parallel")->check(at_least(1));
  sweep->add_option("--out", sweep_args.out_dir, "Sweep directory (default: runs/<sweep name>)");
  sweep->add_option("--set", sweep_args.overrides,
                    "Override a config key in every run, e.g. --set training.steps=100 for a quick look (repeatable)")
      ->take_all()
      ->allow_extra_args(false);
  sweep->add_option("--progress-interval", sweep_args.progress_interval_s,
                    "Seconds between progress lines while runs are going (0: only when a run starts or ends)")
      ->check(at_least(0));
  auto* shard = sweep->add_option("--shard", sweep_args.shard,
                                  "Run only shard I of N (I from 0: 0/4 ... 3/4), rows in results.shard-I-of-N.csv; "
                                  "default in a Slurm job array: its task's shard");
  sweep->add_flag("--collect", sweep_args.collect,
                  "Merge the shards' rows into results.csv, list missing points (exit 0 all done, 1 some failed, "
                  "2 some missing)")
      ->excludes(shard);

  // Everything after `plot` goes to python/seqmix_plot, whose argparse owns the options and --help.
  auto* plot = app.add_subcommand("plot", "Figures (PNG, SVG) from a sweep's results.csv or runs' metrics.jsonl "
                                          "(matplotlib; `seqmix plot --help` for the options)");
  plot->set_help_flag();
  plot->prefix_command();

  CLI11_PARSE(app, argc, argv);

  if (*train) return report_errors("train", [&] { return cmd_train(train_args); });
  if (*eval) return report_errors("eval", [&] { return cmd_eval(eval_args, std::cout); });
  if (*info) return report_errors("info", [&] { return cmd_info(info_path, std::cout); });
  if (*sample) return report_errors("sample", [&] { return cmd_sample(sample_args, std::cout); });
  if (*logits) return report_errors("logits", [&] { return cmd_logits(logits_args, std::cout); });
  if (*sweep) return report_errors("sweep", [&] { return cmd_sweep(sweep_args, argv[0]); });
#ifndef SEQMIX_PYTHON_SOURCE_DIR
#define SEQMIX_PYTHON_SOURCE_DIR ""
#endif
  if (*plot)
    return report_errors("plot", [&] { return cmd_plot(plot->remaining(), PlotLocations{argv[0], SEQMIX_PYTHON_SOURCE_DIR}); });
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Diagnostics (warnings, info lines) go to stderr, so that what a command prints on
  // stdout (eval's JSON, logits, info) stays machine-readable.
  spdlog::set_default_logger(spdlog::stderr_color_mt("seqmix"));
  // MPI_Init when `train` is started by mpirun (data-parallel training); otherwise
  // nothing. Other commands never join an MPI job: `mpirun -np N seqmix sweep` runs one
  // shard per rank as independent processes (docs/cluster.md), and a session would make
  // one shard's failure abort the others.
  if (argc > 1 && std::string(argv[1]) == "train") {
    seqmix::DistributedSession mpi(&argc, &argv);
    return mpi.finish(run(argc, argv));
  }
  return run(argc, argv);
}
