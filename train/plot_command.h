// seqmix plot: figures from sweeps and runs, drawn by the Python package
// python/seqmix_plot (matplotlib) under Debian's /usr/bin/python3.
//
// The command passes its arguments through to `python3 -m seqmix_plot` unchanged
// (the package's argparse owns the options and --help). It finds the package in, in
// order: $SEQMIX_PYTHON_DIR, <executable dir>/../python (a build directory inside the
// source tree), <executable dir>/../share/seqmix/python (an install), and the source
// tree the executable was built from. The interpreter is $SEQMIX_PYTHON, else
// /usr/bin/python3, else python3 on PATH.
#pragma once

#include <string>
#include <vector>

namespace seqmix {

struct PlotLocations {
  std::string argv0;             // how the program was called, when /proc/self/exe is unavailable
  std::string source_python_dir; // <source>/python, compiled in; may be empty
};

// The directory that holds seqmix_plot/, or throws std::runtime_error listing where it looked.
std::string find_plot_package(const PlotLocations& where);

// The Python interpreter to run, or throws std::runtime_error saying what is missing.
std::string find_python();

// Runs the package with args and returns its exit code (2: bad input, 3: no matplotlib).
int cmd_plot(const std::vector<std::string>& args, const PlotLocations& where);

}  // namespace seqmix
