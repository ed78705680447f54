// Keeps statements that carry the API key out of pg_stat_activity,
// pg_stat_statements and the server log. PostgreSQL-style only.
//
// - SET / ALTER SYSTEM SET dfend.api_key: the statement's text, as other
//   sessions see it in pg_stat_activity (and as later hooks such as
//   pg_stat_statements record it), becomes "SET dfend.api_key TO <redacted>".
//   A refusal (not a superuser, a malformed key) is raised here with
//   errhidestmt, so the log's STATEMENT line does not repeat the key.
// - ALTER ROLE / DATABASE ... SET and CREATE / ALTER FUNCTION ... SET
//   dfend.api_key: refused here, before PostgreSQL would store the value in
//   a catalog every role can read, again without logging the statement.
// What this cannot reach: log_statement logs a statement before any hook
// runs, and set_config('dfend.api_key', ...) is a function call. The README
// says so and recommends dfend.api_key_file.
#include "../core/validation.hpp"

#include "postgres.hpp"

extern "C" {
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
}

namespace dfend::pg {

namespace {

constexpr const char *kKeySetting = "dfend.api_key";
ProcessUtility_hook_type previous_hook = nullptr;

bool names_key(const char *name)
{
    return name && pg_strcasecmp(name, kKeySetting) == 0;
}

bool sets_key(const VariableSetStmt *set)
{
    return set && names_key(set->name) &&
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

[[noreturn]] void refuse_catalog_route()
{
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("dfend.api_key cannot be stored as a role, database or function "
                           "setting"),
                    errdetail("Such settings are kept in catalogs that every role can read."),
                    errhint("Set dfend.api_key_file, or dfend.api_key in postgresql.conf."),
                    errhidestmt(true)));
    pg_unreachable();
}

// The key in a SET statement, or nullptr (DEFAULT, FROM CURRENT).
const char *literal_value(const VariableSetStmt *set)
{
    if (set->kind != VAR_SET_VALUE || list_length(set->args) != 1)
        return nullptr;
    Node *arg = (Node *) linitial(set->args);
    if (!IsA(arg, A_Const) || !IsA(&((A_Const *) arg)->val, String))
        return nullptr;
    return strVal(&((A_Const *) arg)->val);
}

void check_key_statement(const VariableSetStmt *set)
{
    if (!superuser())
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied to set parameter \"%s\"", kKeySetting),
                        errhidestmt(true)));
    const char *value = literal_value(set);
    char problem[256] = "";
    if (value && value[0] != '\0') {
        // The C++ result must be gone before ereport can longjmp.
        if (auto why = api_key_problem(value))
            strlcpy(problem, why->c_str(), sizeof problem);
    }
    if (problem[0])
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("invalid value for parameter \"%s\"", kKeySetting),
                        errdetail("%s", problem), errhidestmt(true)));
}

void process_utility(PlannedStmt *statement, const char *query, bool read_only_tree,
                     ProcessUtilityContext context, ParamListInfo params,
                     QueryEnvironment *environment, DestReceiver *destination,
                     QueryCompletion *completion)
{
    Node *tree = statement->utilityStmt;
    const VariableSetStmt *key_set = nullptr;
    switch (nodeTag(tree)) {
    case T_VariableSetStmt:
        if (sets_key((VariableSetStmt *) tree))
            key_set = (VariableSetStmt *) tree;
        break;
    case T_AlterSystemStmt:
        if (sets_key(((AlterSystemStmt *) tree)->setstmt))
            key_set = ((AlterSystemStmt *) tree)->setstmt;
        break;
    case T_AlterRoleSetStmt:
        if (sets_key(((AlterRoleSetStmt *) tree)->setstmt))
            refuse_catalog_route();
        break;
    case T_AlterDatabaseSetStmt:
        if (sets_key(((AlterDatabaseSetStmt *) tree)->setstmt))
            refuse_catalog_route();
        break;
    case T_CreateFunctionStmt:
        if (function_sets_key(((CreateFunctionStmt *) tree)->options))
            refuse_catalog_route();
        break;
    case T_AlterFunctionStmt:
        if (function_sets_key(((AlterFunctionStmt *) tree)->actions))
            refuse_catalog_route();
        break;
    default:
        break;
    }
    if (key_set) {
        check_key_statement(key_set);
        query = IsA(tree, AlterSystemStmt) ? "ALTER SYSTEM SET dfend.api_key TO <redacted>"
                                           : "SET dfend.api_key TO <redacted>";
        pgstat_report_activity(STATE_RUNNING, query);
    }
    if (previous_hook)
        previous_hook(statement, query, read_only_tree, context, params, environment,
                      destination, completion);
    else
        standard_ProcessUtility(statement, query, read_only_tree, context, params,
                                environment, destination, completion);
}

} // namespace

void install_statement_hook()
{
    previous_hook = ProcessUtility_hook;
    ProcessUtility_hook = process_utility;
}

} // namespace dfend::pg
