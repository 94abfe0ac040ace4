// Encryption secrets on the command line, as qemu-img takes them:
//   --object secret,id=ID,data=PASSPHRASE      (or file=PATH; format=raw|base64)
//   --image-opts driver=qcow2,file.filename=IMG,encrypt.key-secret=ID
// plus the shorter qimg form `--key-secret=ID IMG`. The secret's bytes never
// appear in messages.
#pragma once

#include <string>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

// Adds --object, --image-opts and --key-secret to a subcommand. The values
// land in process-wide state (one command runs per process).
void add_secret_options(CLI::App& app);

// With --image-opts, replaces *filename (an option list) by file.filename and
// *format by driver, and takes qcow2's runtime options (overlap-check,
// l2-cache-size, l2-cache-entry-size, refcount-cache-size); then sets
// options->key_secret from encrypt.key-secret or --key-secret. Unknown secret
// ids fail like qemu-img.
qcow::Status apply_secret_options(std::string* filename, std::string* format, qcow::OpenOptions* options);

// Parses every --object without using one: qemu-img reports their errors first.
qcow::Status check_secret_objects();

// Whether --image-opts was given.
bool image_opts_given();

// The bytes of the secret object `id` (for -o encrypt.key-secret=ID).
qcow::Result<std::string> secret_by_id(const std::string& id);

// Legacy AES images get qemu-img's warning on stderr when opened with a key.
void warn_if_legacy_aes(const qcow::Image& image);

}  // namespace qimg
