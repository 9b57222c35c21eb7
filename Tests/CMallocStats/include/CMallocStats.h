// glibc's allocator statistics for the resource-limit tests: bytes in use by malloc, now.
#pragma once
#include <malloc.h>
#include <stddef.h>

static inline size_t chat_malloc_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}
