// `seqmix sweep FILE --collect`: the rows that the shards of a sweep wrote
// (results.shard-I-of-N.csv in the sweep's directory, see train/sweep_shard.h), merged
// into one results.csv in grid order, the file `seqmix plot` reads.
//
// A grid point takes its row from the shard files; when several files hold it (the
// sweep was sharded twice, with different N), a finished row wins over an unfinished
// one. A point no file reports as finished or failed (its shard has not run, or is
// still running, or was stopped) gets the status `missing` and is listed.
//
// Exit codes, for scripts: 0 every point finished; 1 some runs failed and none is
// missing (as a plain sweep with failures); 2 some points are missing (run their shards
// again: they skip what they finished). results.csv is written in every case, so that
// what finished can be plotted while the rest runs.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "train/sweep.h"

namespace seqmix {

// Throws std::invalid_argument when dir holds no shard files, or a shard file does not
// belong to this grid (other columns), naming the file and the line.
int collect_sweep(const std::string& sweep_path, const SweepSpec& spec, const std::vector<SweepPoint>& points,
                  const std::filesystem::path& dir, std::ostream& out);

}  // namespace seqmix
