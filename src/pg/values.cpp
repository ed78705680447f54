#include "border.hpp"
#include "values.hpp"

namespace dfend::pg {

TupleDesc composite_result_type(FunctionCallInfo fcinfo)
{
    TupleDesc result_type;
    if (get_call_result_type(fcinfo, nullptr, &result_type) != TYPEFUNC_COMPOSITE)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("function returning record called in context that cannot "
                               "accept type record")));
    return BlessTupleDesc(result_type);
}

char *utf8_string(char *server_text)
{
    return server_text ? pg_server_to_any(server_text, strlen(server_text), PG_UTF8) : nullptr;
}

char *btree_operator(Oid type, int16 strategy)
{
    TypeCacheEntry *cache = lookup_type_cache(type, TYPECACHE_BTREE_OPFAMILY);
    if (!OidIsValid(cache->btree_opf))
        return nullptr;
    Oid operator_oid =
        get_opfamily_member(cache->btree_opf, cache->btree_opintype, cache->btree_opintype, strategy);
    HeapTuple tuple = OidIsValid(operator_oid)
                          ? SearchSysCache1(OPEROID, ObjectIdGetDatum(operator_oid))
                          : nullptr;
    if (!HeapTupleIsValid(tuple))
        return nullptr;
    auto form = (Form_pg_operator) GETSTRUCT(tuple);
    char *result = psprintf("OPERATOR(%s.%s)",
                            quote_identifier(get_namespace_name(form->oprnamespace)),
                            NameStr(form->oprname));
    ReleaseSysCache(tuple);
    return result;
}

char *column_or_null(const char *column)
{
    return column ? psprintf("t.%s", quote_identifier(column)) : pstrdup("NULL");
}

ArrayType *text_array(char **values, int count)
{
    Datum *datums = (Datum *) palloc(sizeof(Datum) * (count > 0 ? count : 1));
    for (int i = 0; i < count; ++i)
        datums[i] = CStringGetTextDatum(values[i]);
    return construct_array(datums, count, TEXTOID, -1, false, TYPALIGN_INT);
}

char *server_string(const std::string &utf8)
{
    return pg_call([&] {
        char *converted = pg_any_to_server(utf8.c_str(), (int) utf8.size(), PG_UTF8);
        // The conversion hands back its input when there is nothing to do.
        return converted == utf8.c_str() ? pstrdup(converted) : converted;
    });
}

} // namespace dfend::pg
