#ifndef SWITCHBOARD_FUZZ_DRIVER_H
#define SWITCHBOARD_FUZZ_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer with the process's arguments and exits with its status.
///
/// SwiftPM renames an executable target's `main` to `<target>_main` on Linux (so tests can link executables), which
/// leaves libFuzzer's own `main` unused: each fuzz target's top-level code calls this instead.
void switchboard_fuzz_run(int argc, char **argv, int (*callback)(const uint8_t *data, size_t size));

#endif
