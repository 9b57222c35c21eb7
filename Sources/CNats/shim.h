#ifndef CHAT_CNATS_SHIM_H
#define CHAT_CNATS_SHIM_H

/* The official NATS C client (Debian's libnats-dev): chatd's cross-instance bus when configured. */
#include <nats/nats.h>

#endif
