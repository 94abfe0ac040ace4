// qemu-style "-o key=value,key=value" option lists and their mapping onto
// qcow::CreateOptions (create, convert, later amend).
//
// Checking happens in two stages, like qemu-img: parse_create_options() does
// the syntax and type checks (unknown keys, booleans, numbers, sizes) before
// anything is printed; validate_create_options() does the semantic checks
// (cluster size, compat level, ...) after the "Formatting ..." line.
// Messages carry no file name; the caller prefixes "FILE: ".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qimg {

struct OptionItem {
  std::string key;
  std::string value;  // "on" when the item had no '='
};

struct OptionList {
  std::vector<OptionItem> items;  // in command-line order; later items win
  bool help = false;              // "help" or "?" appeared
  std::string help_item;          // the first of them, and how many items preceded it
  size_t help_index = 0;
};

// Splits every -o argument at ',' (",," is a literal comma) and appends the
// items to *out.
qcow::Status parse_option_list(const std::vector<std::string>& args, OptionList* out);

// Parses "on/off/true/false/yes/no".
std::optional<bool> parse_bool(std::string_view text);

// Parses a preallocation mode: "off", "metadata", "falloc" or "full".
std::optional<qcow::Preallocation> parse_preallocation(std::string_view text);

// The result of stage one.
struct CreateSpec {
  qcow::Format format = qcow::Format::kQcow2;
  // key -> value as printed in the "Formatting" line (numbers normalised).
  std::map<std::string, std::string> given;
  std::optional<uint64_t> size;
  qcow::CreateOptions options;  // filled by validate_create_options()
};

// Whether the host file's own creation options (qemu's file driver: nocow,
// extent_size_hint) are accepted besides the format's; qemu-img measure takes them.
enum class HostFileOptions { kReject, kAccept };

// Stage one: syntax and types. Later keys override earlier ones.
qcow::Status parse_create_options(const OptionList& list, qcow::Format format, CreateSpec* spec,
                                  HostFileOptions host_file = HostFileOptions::kReject);

// Sets a string option as if it had been given with -o (used for -b and -F).
void set_create_option(CreateSpec* spec, const std::string& key, const std::string& value);

// Stage two: semantic checks, fills spec->options completely (size included;
// the caller must have set spec->size).
qcow::Status validate_create_options(CreateSpec* spec);

// "Formatting 'FILE', fmt=qcow2 cluster_size=65536 ..." without newline.
std::string formatting_line(const std::string& filename, const CreateSpec& spec);

// Prints "Supported <fmt> options:" and the option table (-o help).
void print_create_help(qcow::Format format);

// Option names for a format (help order); completions mirror this list.
std::vector<std::string> create_option_names(qcow::Format format);

}  // namespace qimg

namespace qimg {

// -f/-O values: "qcow2" or "raw"; an empty name means "probe" (nullopt).
// Unknown names give "Unknown file format 'NAME'".
qcow::Status parse_format_option(const std::string& name, std::optional<qcow::Format>* out);

enum class OutputFormat { kHuman, kJson };
// --output: "human" or "json"; anything else gives qemu-img's message.
qcow::Status parse_output_option(const std::string& name, OutputFormat* out);

// A -t/-T cache mode name as qemu's bdrv_parse_cache_mode() reads it: writeback
// (default), none/off (O_DIRECT), writethrough, directsync (O_DIRECT, flush after
// every write), unsafe (never flush).
struct CacheChoice {
  std::string name = "writeback";
  qcow::CacheMode mode = qcow::CacheMode::kWriteback;
  bool sync_each_write = false;
  bool flush = true;
  bool direct = false;
};
// False for an unknown name; an empty name keeps the default.
bool parse_cache(const std::string& text, CacheChoice* c);

}  // namespace qimg
