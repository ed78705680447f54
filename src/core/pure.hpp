// Included first by every header of the pure C++ core. The core is unit-tested
// without a server and may throw freely, so it must never see PostgreSQL's
// headers (their macros break C++ and their longjmp errors skip destructors).
#pragma once
#ifdef PG_VERSION_NUM
#error "src/core must not include PostgreSQL headers; include core headers before postgres.h"
#endif
