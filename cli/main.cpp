// qimg: command-line qcow2 toolkit (qemu-img compatible command lines).
//
// Parse first, then run: every subcommand registers its options into a
// shared Options struct, CLI11 parses the whole command line, and only then
// is the chosen command's run_ function called. Exit codes: 0 success,
// 1 error (check has its own, see commands/check.hpp).
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/output.hpp"
#include "commands/amend.hpp"
#include "commands/bench.hpp"
#include "commands/check.hpp"
#include "commands/commit.hpp"
#include "commands/compare.hpp"
#include "commands/convert.hpp"
#include "commands/create.hpp"
#include "commands/info.hpp"
#include "commands/io.hpp"
#include "commands/map.hpp"
#include "commands/measure.hpp"
#include "commands/rebase.hpp"
#include "commands/resize.hpp"
#include "commands/snapshot.hpp"
#include "qcow/image.hpp"

#ifndef QIMG_VERSION
#define QIMG_VERSION "unknown"
#endif

namespace qimg {
namespace {

using Runner = std::function<int()>;

// Registers a subcommand's options and returns the function that runs it.
template <class Options, void (*Register)(CLI::App&, std::shared_ptr<Options>),
          int (*Run)(const Options&)>
Runner setup(CLI::App& sub) {
  auto options = std::make_shared<Options>();
  Register(sub, options);
  return [options] { return Run(*options); };
}

struct Command {
  const char* name;
  const char* description;
  Runner (*setup)(CLI::App&);
};

// The command table (qemu-img's img_cmds[]). man/qimg.1 and completions/*
// list the same commands.
const Command kCommands[] = {
    {"amend", "Change the format-specific options of an image", &setup<AmendOptions, register_amend, run_amend>},
    {"bench", "Run a simple image benchmark or a copy-on-write scenario", &setup<BenchOptions, register_bench, run_bench>},
    {"check", "Check the image for errors", &setup<CheckOptions, register_check, run_check>},
    {"commit", "Commit the content of an image into its backing file", &setup<CommitOptions, register_commit, run_commit>},
    {"compare", "Check whether two images have the same content", &setup<CompareOptions, register_compare, run_compare>},
    {"convert", "Convert or copy images", &setup<ConvertOptions, register_convert, run_convert>},
    {"create", "Create a new image", &setup<CreateOptions, register_create, run_create>},
    {"info", "Show information about an image", &setup<InfoOptions, register_info, run_info>},
    {"io", "Run qemu-io style commands on an image", &setup<IoOptions, register_io, run_io>},
    {"map", "Show the allocation map of an image", &setup<MapOptions, register_map, run_map>},
    {"measure", "Calculate the file size required for a new image", &setup<MeasureOptions, register_measure, run_measure>},
    {"rebase", "Change the backing file of an image", &setup<RebaseOptions, register_rebase, run_rebase>},
    {"resize", "Change the virtual size of an image", &setup<ResizeOptions, register_resize, run_resize>},
    {"snapshot", "List, apply, create or delete internal snapshots", &setup<SnapshotOptions, register_snapshot, run_snapshot>},
};

int run(int argc, char** argv) {
  CLI::App app{"qimg: qcow2 image toolkit (qemu-img compatible)", "qimg"};
  app.require_subcommand(0, 1);
  bool show_version = false;
  app.add_flag("-V,--version", show_version, "Print the version and exit");

  struct Registered {
    CLI::App* app;
    Runner run;
  };
  std::vector<Registered> commands;
  for (const Command& c : kCommands) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    commands.push_back({sub, c.setup(*sub)});
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    return fail(e.what());
  }

  if (show_version) {
    std::printf("qimg %s\nlibqcow %s\n", QIMG_VERSION, qcow::version().c_str());
    return 0;
  }
  for (const Registered& r : commands) {
    if (r.app->parsed()) return r.run();
  }
  return fail("Not enough arguments (try 'qimg --help')");
}

}  // namespace
}  // namespace qimg

int main(int argc, char** argv) {
  try {
    return qimg::run(argc, argv);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "qimg: internal error: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fflush(stdout);
    std::fprintf(stderr, "qimg: internal error: unknown exception\n");
    return 1;
  }
}
