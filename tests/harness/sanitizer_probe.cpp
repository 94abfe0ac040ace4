// One deliberate sanitizer finding per argument, for tests/harness/test_harness.py --probe:
// with the sanitizer build's test environment (tests/sanitizer.env) each must exit 66.
// Built only with QIMG_SANITIZE=ON.
#include <climits>
#include <cstdlib>
#include <cstring>

namespace {

// Not inlined, so no copy of the pointer stays in main's frame for LeakSanitizer to find.
[[gnu::noinline]] void leak() {
  void* volatile p = std::malloc(4096);
  p = nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const char* what = argv[1];
  if (std::strcmp(what, "use-after-free") == 0) {  // AddressSanitizer (an overflow would be UBSan's first)
    char* p = new char[16];
    p[0] = 1;
    delete[] p;
    return *static_cast<volatile char*>(p);
  }
  if (std::strcmp(what, "leak") == 0) {  // LeakSanitizer, at exit
    leak();
    return 0;
  }
  if (std::strcmp(what, "signed-overflow") == 0) {  // UndefinedBehaviorSanitizer
    volatile int x = INT_MAX;
    return x + argc;
  }
  return 2;
}
