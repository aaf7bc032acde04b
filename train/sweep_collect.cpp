#include "train/sweep_collect.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>

#include "train/sweep_shard.h"

namespace seqmix {

namespace fs = std::filesystem;

namespace {

// The fields of one line of results.csv: commas split, double quotes group, "" is a quote.
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> f(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '"') {
      if (quoted && i + 1 < line.size() && line[i + 1] == '"') f.back() += line[++i];
      else quoted = !quoted;
    } else if (c == ',' && !quoted) {
      f.emplace_back();
    } else {
      f.back() += c;
    }
  }
  return f;
}

struct ShardFile {
  fs::path path;
  int64_t index, count;
};

struct Row {
  std::string line;    // as the shard wrote it: the merged file repeats it byte for byte
  std::string status;  // done | failed | running | pending
  std::string file;    // the shard file it came from
};

}  // namespace

int collect_sweep(const std::string& sweep_path, const SweepSpec& spec, const std::vector<SweepPoint>& points,
                  const fs::path& dir, std::ostream& out) {
  const std::string hint = " (the shards write results.shard-I-of-N.csv in the sweep's directory; give --collect the "
                           "--out the shards were given)";
  if (!fs::is_directory(dir)) throw std::invalid_argument(dir.string() + ": no such directory" + hint);
  std::vector<ShardFile> files;
  const std::regex name(R"(results\.shard-(\d+)-of-(\d+)\.csv)");
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string f = e.path().filename().string();
    if (e.is_regular_file() && std::regex_match(f, m, name))
      files.push_back({e.path(), std::stoll(m[1].str()), std::stoll(m[2].str())});
  }
  if (files.empty()) throw std::invalid_argument(dir.string() + ": no shard rows to collect" + hint);
  std::sort(files.begin(), files.end(),
            [](const ShardFile& a, const ShardFile& b) { return std::tie(a.count, a.index) < std::tie(b.count, b.index); });

  const std::string header = results_csv_header(spec);
  const size_t status_col = 1 + spec.keys().size();
  const size_t columns = csv_fields(header).size();
  std::map<std::string, size_t> grid_index;
  for (size_t i = 0; i < points.size(); ++i) grid_index[points[i].name] = i;
  std::vector<std::optional<Row>> rows(points.size());
  std::set<int64_t> counts;
  for (const ShardFile& sf : files) {
    counts.insert(sf.count);
    std::ifstream in(sf.path);
    std::string line;
    if (!std::getline(in, line) || line != header)
      throw std::invalid_argument(sf.path.string() + ":1: its columns are not those of " + sweep_path +
                                  "'s grid; it was written for another sweep\n  file: " + line + "\n  grid: " + header);
    for (int64_t line_no = 2; std::getline(in, line); ++line_no) {
      if (line.empty()) continue;
      const std::vector<std::string> f = csv_fields(line);
      const std::string where = sf.path.string() + ":" + std::to_string(line_no);
      if (f.size() != columns)
        throw std::invalid_argument(where + ": " + std::to_string(f.size()) + " fields, the header has " +
                                    std::to_string(columns) + " (a file cut short?)");
      const auto it = grid_index.find(f[0]);
      if (it == grid_index.end()) {
        out << "collect: " << where << ": run " << f[0] << " is not a point of " << sweep_path << "'s grid; ignored\n";
        continue;
      }
      std::optional<Row>& r = rows[it->second];
      // A finished row wins; otherwise the first file's (they are sorted by N, then I).
      if (!r || (r->status != "done" && f[status_col] == "done")) r = Row{line, f[status_col], sf.path.filename().string()};
    }
  }

  std::string names;
  for (const ShardFile& sf : files) names += (names.empty() ? "" : ", ") + sf.path.filename().string();
  out << "collect: " << points.size() << " points in " << sweep_path << "'s grid; rows from " << names << "\n";
  // Why a point has no finished or failed row, and which shard owes it when every file
  // comes from one sharding (one N), so that the user knows which task to run again.
  auto why_missing = [&](size_t i, const std::optional<Row>& r) -> std::string {
    if (r) return r->status + " in " + r->file + ": its shard stopped before the run ended, or is still running";
    if (counts.size() != 1) return "no row in any shard file";
    const int64_t n = *counts.begin(), s = static_cast<int64_t>(i) % n;
    const SweepShard shard{s, n, ""};
    const bool present = std::any_of(files.begin(), files.end(), [&](const ShardFile& f) { return f.index == s; });
    return "shard " + std::to_string(s) + "/" + std::to_string(n) + (present ? " wrote no row for it in " : " has not written ") +
           shard.results_file();
  };
  int64_t done = 0, failed = 0, missing = 0;
  const fs::path path = dir / "results.csv", tmp = dir / "results.csv.tmp";
  {
    std::ofstream csv(tmp);
    csv << header << "\n";
    for (size_t i = 0; i < points.size(); ++i) {
      const std::optional<Row>& r = rows[i];
      if (r && (r->status == "done" || r->status == "failed")) {
        csv << r->line << "\n";
        if (r->status == "done") ++done;
        else {
          ++failed;
          out << "failed: " << points[i].name << " (" << r->file << "; its log: "
              << (dir / points[i].name / "log.txt").string() << ")\n";
        }
        continue;
      }
      ++missing;
      csv << csv_escape(points[i].name);
      for (const auto& [k, v] : points[i].values) csv << "," << csv_escape(v);
      csv << ",missing" << std::string(columns - status_col - 1, ',') << "\n";
      out << "missing: " << points[i].name << " (" << why_missing(i, r) << ")\n";
    }
  }
  fs::rename(tmp, path);
  out << "results: " << path.string() << " (" << done << " done, " << failed << " failed, " << missing << " missing)"
      << std::endl;
  return missing > 0 ? 2 : failed > 0 ? 1 : 0;
}

}  // namespace seqmix
