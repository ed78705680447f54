// Keeps the API key out of SQL text, and SQL text that names the key out of
// the server log and pg_stat_activity. PostgreSQL-style only.
//
// The key is configured where no statement carries it: dfend.api_key_file,
// or dfend.api_key in postgresql.conf (a PGC_SIGHUP setting). So:
// - ProcessUtility refuses, before PostgreSQL handles them, SET / SET LOCAL /
//   SET ... FROM CURRENT and ALTER SYSTEM SET of dfend.api_key, and
//   ALTER ROLE / DATABASE ... SET and CREATE / ALTER FUNCTION ... SET of it
//   (catalogs every role can read). RESET and ALTER SYSTEM RESET pass.
//   Nothing that passes is rewritten: pg_stat_statements reads the text at
//   the statement's own location and length, which must stay valid.
// - Text that names the key (a refused statement, set_config('dfend.api_key',
//   ...), a DO block) is logged by PostgreSQL before any hook runs
//   (log_statement, debug2 "parse" lines, durations). emit_log_hook hides
//   the STATEMENT and CONTEXT of such reports and replaces the statement
//   wherever a message repeats it.
// - pg_stat_activity shows the client's text from the moment it arrives.
//   post_parse_analyze (simple protocol, Parse), ExecutorRun and
//   ProcessUtility (Bind / Execute report the text again) and errors raised
//   on the way report a fixed text instead, as soon as dfend runs.
// "Names the key" is textual, and cheap for ordinary statements: "dfend"
// and "api_key" (not followed by an identifier character, so
// dfend.api_key_file does not count) both occur, in any case.
#include "statements.hpp"

#include "launcher.hpp"

#include "postgres.hpp"
#include "lifecycle.hpp"

extern "C" {
#include "executor/executor.h"
#include "nodes/parsenodes.h"
#include "parser/analyze.h"
#include "tcop/utility.h"
#include "utils/backend_status.h"
}

namespace dfend::pg {

namespace {

// What the log and pg_stat_activity show instead of a statement naming the key.
constexpr const char *kRedactedStatement =
    "[statement redacted by dfend: it names dfend.api_key]";
// What the log (and the client) get instead of any other text reported
// while such a statement runs: a syntax error or a parameter list can quote
// the key.
constexpr const char *kRedactedMessage =
    "[message redacted by dfend: its statement names dfend.api_key]";
constexpr const char *kKeySetting = "dfend.api_key";
constexpr const char *kHint = "Put the key in the file named by dfend.api_key_file, or set "
                              "dfend.api_key in postgresql.conf and reload.";

ProcessUtility_hook_type previous_utility_hook = nullptr;
post_parse_analyze_hook_type previous_analyze_hook = nullptr;
ExecutorRun_hook_type previous_run_hook = nullptr;
emit_log_hook_type previous_log_hook = nullptr;

// --- Does a text name the key setting? -------------------------------------

bool identifier_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '$' || (unsigned char) c >= 0x80;
}

// Both "dfend" and "api_key" occur, ASCII case-insensitively, which catches
// dfend.api_key, "dfend"."api_key", DFEND . API_KEY and the name as a string.
bool names_key(const char *text)
{
    if (!text)
        return false;
    bool dfend = false;
    bool api_key = false;
    for (const char *at = text; *at; ++at) {
        char lower = *at | 0x20; // 'D' -> 'd', 'A' -> 'a'; other bytes never match
        if (lower == 'd' && !dfend)
            dfend = pg_strncasecmp(at, "dfend", 5) == 0;
        else if (lower == 'a' && !api_key)
            api_key = pg_strncasecmp(at, "api_key", 7) == 0 && !identifier_char(at[7]);
        if (dfend && api_key)
            return true;
    }
    return false;
}

// The client's text (debug_query_string) is scanned once per message: a
// multi-statement string is analysed statement by statement, and the log
// hook runs for every report. A message is one text at one address with one
// statement_timestamp().
struct ClientText {
    const char *text = nullptr;
    TimestampTz received = 0;
    bool names_key = false;
    bool activity_redacted = false;
};
ClientText client_text;

ClientText *current_client_text()
{
    if (!debug_query_string)
        return nullptr;
    TimestampTz received = GetCurrentStatementStartTimestamp();
    if (client_text.text != debug_query_string || client_text.received != received) {
        client_text.text = debug_query_string;
        client_text.received = received;
        client_text.names_key = names_key(debug_query_string);
        client_text.activity_redacted = false;
    }
    return &client_text;
}

bool client_text_names_key()
{
    ClientText *current = current_client_text();
    return current && current->names_key;
}

// --- pg_stat_activity ----------------------------------------------------------

// The query id is kept: pgstat_report_activity clears it, and
// pg_stat_statements' id for this statement is still right.
void report_redacted_activity()
{
    uint64 query_id = pgstat_get_my_query_id();
    pgstat_report_activity(STATE_RUNNING, kRedactedStatement);
    if (query_id != 0)
        pgstat_report_query_id(query_id, true);
    if (ClientText *current = current_client_text())
        current->activity_redacted = true;
}

// PostgreSQL reports the client's text when a Query, Bind or Execute message
// arrives; dfend's hooks replace it once per message.
void redact_activity_if_named()
{
    ClientText *current = current_client_text();
    if (current && current->names_key && !current->activity_redacted)
        report_redacted_activity();
}

// --- Statements that would set the key ------------------------------------------

bool is_key(const char *name)
{
    return name && pg_strcasecmp(name, kKeySetting) == 0;
}

// A value or FROM CURRENT; DEFAULT and RESET carry no key and pass.
bool sets_key(const VariableSetStmt *set)
{
    return set && is_key(set->name) &&
           (set->kind == VAR_SET_VALUE || set->kind == VAR_SET_CURRENT);
}

// CREATE/ALTER FUNCTION ... SET dfend.api_key = ...
bool function_sets_key(List *options)
{
    ListCell *cell;
    foreach (cell, options) {
        DefElem *option = (DefElem *) lfirst(cell);
        if (strcmp(option->defname, "set") == 0 && option->arg &&
            IsA(option->arg, VariableSetStmt) && sets_key((VariableSetStmt *) option->arg))
            return true;
    }
    return false;
}

enum class Route { None, Session, System, Catalog };

Route key_route(Node *tree)
{
    switch (nodeTag(tree)) {
    case T_VariableSetStmt:
        return sets_key((VariableSetStmt *) tree) ? Route::Session : Route::None;
    case T_AlterSystemStmt:
        return sets_key(((AlterSystemStmt *) tree)->setstmt) ? Route::System : Route::None;
    case T_AlterRoleSetStmt:
        return sets_key(((AlterRoleSetStmt *) tree)->setstmt) ? Route::Catalog : Route::None;
    case T_AlterDatabaseSetStmt:
        return sets_key(((AlterDatabaseSetStmt *) tree)->setstmt) ? Route::Catalog
                                                                  : Route::None;
    case T_CreateFunctionStmt:
        return function_sets_key(((CreateFunctionStmt *) tree)->options) ? Route::Catalog
                                                                         : Route::None;
    case T_AlterFunctionStmt:
        return function_sets_key(((AlterFunctionStmt *) tree)->actions) ? Route::Catalog
                                                                        : Route::None;
    default:
        return Route::None;
    }
}

// The same refusal for superusers and everyone else: no SQL text may carry
// the key. Neither the statement nor the CONTEXT (an EXECUTE in a DO block
// quotes it) goes to the log, and pg_stat_activity keeps a fixed text.
[[noreturn]] void refuse(Route route)
{
    report_redacted_activity();
    if (route == Route::Catalog)
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("dfend.api_key cannot be stored as a role, database or function "
                               "setting"),
                        errdetail("Such settings are kept in catalogs that every role can "
                                  "read."),
                        errhint("%s", kHint), errhidestmt(true), errhidecontext(true)));
    else if (route == Route::System)
        ereport(ERROR, (errcode(ERRCODE_CANT_CHANGE_RUNTIME_PARAM),
                        errmsg("dfend.api_key cannot be set with ALTER SYSTEM"),
                        errdetail("The statement's text, which carries the key, can reach the "
                                  "server log and pg_stat_activity."),
                        errhint("%s", kHint), errhidestmt(true), errhidecontext(true)));
    else
        ereport(ERROR, (errcode(ERRCODE_CANT_CHANGE_RUNTIME_PARAM),
                        errmsg("dfend.api_key cannot be set in a session"),
                        errdetail("The statement's text, which carries the key, can reach the "
                                  "server log and pg_stat_activity."),
                        errhint("%s", kHint), errhidestmt(true), errhidecontext(true)));
    pg_unreachable();
}

// --- Hooks ----------------------------------------------------------------------------

// Statements nest (a DO block runs SPI statements); only the outermost
// level redacts pg_stat_activity, once per client message.
int nesting_level = 0;

void process_utility(PlannedStmt *statement, const char *query, bool read_only_tree,
                     ProcessUtilityContext context, ParamListInfo params,
                     QueryEnvironment *environment, DestReceiver *destination,
                     QueryCompletion *completion)
{
    Route route = key_route(statement->utilityStmt);
    if (route != Route::None)
        refuse(route);
    if (nesting_level == 0)
        redact_activity_if_named();
    int64 discarded = pending_entries_dropped_by(statement->utilityStmt);
    nesting_level++;
    PG_TRY();
    {
        // DROP / RENAME / TEMPLATE of a database: its worker steps aside.
        before_utility_statement(statement->utilityStmt);
        if (previous_utility_hook)
            previous_utility_hook(statement, query, read_only_tree, context, params,
                                  environment, destination, completion);
        else
            standard_ProcessUtility(statement, query, read_only_tree, context, params,
                                    environment, destination, completion);
    }
    PG_FINALLY();
    {
        nesting_level--;
    }
    PG_END_TRY();
    warn_discarded_entries(discarded);
}

void executor_run(DFEND_EXECUTOR_RUN_PARAMS)
{
    if (nesting_level == 0)
        redact_activity_if_named();
    nesting_level++;
    PG_TRY();
    {
        if (previous_run_hook)
            previous_run_hook(DFEND_EXECUTOR_RUN_ARGS);
        else
            standard_ExecutorRun(DFEND_EXECUTOR_RUN_ARGS);
    }
    PG_FINALLY();
    {
        nesting_level--;
    }
    PG_END_TRY();
}

// Runs after the previous hook (pg_stat_statements jumbles and stores
// there); changes neither the query nor the jumble.
void post_parse_analyze(ParseState *state, Query *query, JumbleState *jumble)
{
    if (previous_analyze_hook)
        previous_analyze_hook(state, query, jumble);
    // The client's own text, not a function body analysed on its behalf.
    if (state->p_sourcetext && state->p_sourcetext == debug_query_string)
        redact_activity_if_named();
}

// --- The log ------------------------------------------------------------------------

bool reported_from(const ErrorData *report, const char *file)
{
    return report->filename && strcmp(report->filename, file) == 0;
}

// Reports whose words are fixed, never a piece of the statement: dfend's
// refusals, and PostgreSQL's "parameter cannot be changed now" and
// "permission denied to set parameter" (which quote only the name).
bool fixed_text(const ErrorData *report)
{
    if (reported_from(report, "statements.cpp"))
        return true;
    return reported_from(report, "guc.c") &&
           (report->sqlerrcode == ERRCODE_CANT_CHANGE_RUNTIME_PARAM ||
            report->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE);
}

// text with every occurrence of statement replaced, or nullptr if none.
char *without_statement(const char *text, const char *statement)
{
    if (!text || !statement || statement[0] == '\0' || !strstr(text, statement))
        return nullptr;
    StringInfoData out;
    initStringInfo(&out);
    size_t length = strlen(statement);
    const char *at = text;
    for (const char *found; (found = strstr(at, statement)) != nullptr; at = found + length) {
        appendBinaryStringInfo(&out, at, found - at);
        appendStringInfoString(&out, kRedactedStatement);
    }
    appendStringInfoString(&out, at);
    return out.data;
}

void replace_text(char **field, char *replacement)
{
    if (*field)
        pfree(*field);
    *field = replacement;
}

// Runs for every report that goes to the server log, before it is written
// (and sent to the client: what is replaced here, the client gets too).
void scrub_report(ErrorData *report)
{
    bool statement_named = client_text_names_key() || names_key(report->internalquery) ||
                           names_key(report->context);
    if (!statement_named && !names_key(report->message) && !names_key(report->detail) &&
        !names_key(report->detail_log))
        return;
    report->hide_stmt = true;
    report->hide_ctx = true;
    if (!statement_named)
        return; // the setting's name in a message (a refusal, a reload), no statement
    MemoryContext previous = MemoryContextSwitchTo(report->assoc_context);
    char *replaced = without_statement(report->message, debug_query_string);
    if (!replaced)
        replaced = without_statement(report->message, report->internalquery);
    if (report->internalquery) {
        replace_text(&report->internalquery, pstrdup(kRedactedStatement));
        report->internalpos = 0;
    }
    if (replaced || !fixed_text(report)) {
        // log_statement, durations, "parse <unnamed>: ...": the prefix stays.
        // postgres.c's other messages ("duration: 0.1 ms") quote no part of
        // a statement; its details can ("parameters: $1 = '...'").
        if (replaced)
            replace_text(&report->message, replaced);
        else if (!reported_from(report, "postgres.c"))
            replace_text(&report->message, pstrdup(kRedactedMessage));
        replace_text(&report->detail, nullptr);
        replace_text(&report->detail_log, nullptr);
        replace_text(&report->hint, nullptr);
    }
    MemoryContextSwitchTo(previous);
    // An error before any other hook ran (a syntax error, a failed Bind)
    // leaves the text in pg_stat_activity.
    if (report->elevel >= ERROR)
        redact_activity_if_named();
}

void emit_log(ErrorData *report)
{
    scrub_report(report);
    if (previous_log_hook)
        previous_log_hook(report);
}

} // namespace

void install_statement_hook()
{
    previous_utility_hook = ProcessUtility_hook;
    ProcessUtility_hook = process_utility;
    previous_analyze_hook = post_parse_analyze_hook;
    post_parse_analyze_hook = post_parse_analyze;
    previous_run_hook = ExecutorRun_hook;
    ExecutorRun_hook = executor_run;
    previous_log_hook = emit_log_hook;
    emit_log_hook = emit_log;
}

} // namespace dfend::pg
