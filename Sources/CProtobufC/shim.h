#ifndef CHAT_CPROTOBUFC_SHIM_H
#define CHAT_CPROTOBUFC_SHIM_H

#include <protobuf-c/protobuf-c.h>

/* PROTOBUF_C_VERSION_NUMBER is a macro with arithmetic; Swift imports the function form only. */
static inline unsigned chat_protobuf_c_header_version(void) {
    return PROTOBUF_C_VERSION_NUMBER;
}

#endif
