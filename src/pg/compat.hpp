// What differs between the PostgreSQL major versions dfend builds against
// (15 to 18; 15, 17 and 18 tested). The only place that tests
// PG_VERSION_NUM: included by postgres.hpp after PostgreSQL's headers.
#pragma once

// shmem_request_hook and MarkGUCPrefixReserved arrived in 15.
#if PG_VERSION_NUM < 150000
#error "dfend needs PostgreSQL 15 or later"
#endif

// 18 records the module's name and version in its magic block (shown by
// pg_get_loaded_modules()); there a bare PG_MODULE_MAGIC leaves those fields
// unset and warns under -Wextra. Positional, not designated, arguments: C++
// forbids mixing both in one initializer.
#if PG_VERSION_NUM >= 180000
#define DFEND_MODULE_MAGIC(version) PG_MODULE_MAGIC_EXT("dfend", version)
#else
#define DFEND_MODULE_MAGIC(version) PG_MODULE_MAGIC
#endif

// ExecutorRun_hook: 18 dropped the execute_once argument. A hook is
// declared with DFEND_EXECUTOR_RUN_PARAMS and passes DFEND_EXECUTOR_RUN_ARGS
// on (its parameters are named query, direction, count, execute_once).
#if PG_VERSION_NUM >= 180000
#define DFEND_EXECUTOR_RUN_PARAMS QueryDesc *query, ScanDirection direction, uint64 count
#define DFEND_EXECUTOR_RUN_ARGS query, direction, count
#else
#define DFEND_EXECUTOR_RUN_PARAMS                                                            \
    QueryDesc *query, ScanDirection direction, uint64 count, bool execute_once
#define DFEND_EXECUTOR_RUN_ARGS query, direction, count, execute_once
#endif

namespace dfend::pg::compat {

// Inserts the index entries of a freshly inserted heap tuple. 16 added the
// onlySummarizing argument (for HOT updates); a plain insert passes false.
inline List *insert_index_tuples(ResultRelInfo *relation, TupleTableSlot *slot, EState *estate)
{
#if PG_VERSION_NUM >= 160000
    return ExecInsertIndexTuples(relation, slot, estate, false, false, nullptr, NIL, false);
#else
    return ExecInsertIndexTuples(relation, slot, estate, false, false, nullptr, NIL);
#endif
}

// Memory for GUC values and check-hook "extra" data: 16 moved it from
// malloc to its own memory context (guc_malloc, guc_free), and frees it
// there, so a check hook must allocate and free with PostgreSQL's choice.
// elevel LOG: out of memory returns NULL, as malloc does.
inline void *guc_alloc(size_t size)
{
#if PG_VERSION_NUM >= 160000
    return guc_malloc(LOG, size);
#else
    return malloc(size);
#endif
}

inline char *guc_string(const char *value)
{
#if PG_VERSION_NUM >= 160000
    return guc_strdup(LOG, value);
#else
    return strdup(value);
#endif
}

inline void guc_release(void *pointer)
{
#if PG_VERSION_NUM >= 160000
    guc_free(pointer);
#else
    free(pointer);
#endif
}

// Every setting the server knows (utils/guc_tables.h): 16 keeps them in a
// hash table and hands back a fresh array with its length.
inline struct config_generic **all_settings(int *count)
{
#if PG_VERSION_NUM >= 160000
    return get_guc_variables(count);
#else
    *count = GetNumConfigOptions();
    return get_guc_variables();
#endif
}

} // namespace dfend::pg::compat
