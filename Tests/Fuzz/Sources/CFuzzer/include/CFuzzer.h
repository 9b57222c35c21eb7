// libFuzzer's public driver (compiler-rt, FuzzerInterface.h), for executables whose `main` is their own.
#pragma once
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
