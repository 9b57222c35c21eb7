#ifndef CHAT_CLIBPQ_SHIM_H
#define CHAT_CLIBPQ_SHIM_H

#include <libpq-fe.h>

/* libpq has no function-like macros that we need; the diagnostic field codes are plain character constants
 * that Swift imports as Int32. This wrapper keeps the SQLSTATE lookup in one place. */
static inline const char *chat_PQresultSQLState(const PGresult *result) {
    return PQresultErrorField(result, PG_DIAG_SQLSTATE);
}

static inline const char *chat_PQresultPrimaryMessage(const PGresult *result) {
    return PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
}

#endif
