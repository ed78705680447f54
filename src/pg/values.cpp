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

namespace {

// Well-formed UTF-8 without NUL, which the conversion functions expect;
// anything else becomes '?'.
StringInfoData valid_utf8(const char *text, int length)
{
    StringInfoData out;
    initStringInfo(&out);
    const auto *bytes = reinterpret_cast<const unsigned char *>(text);
    for (int at = 0; at < length;) {
        int n = pg_utf_mblen(bytes + at);
        if (bytes[at] != '\0' && n <= length - at && pg_utf8_islegal(bytes + at, n)) {
            appendBinaryStringInfo(&out, text + at, n);
            at += n;
        } else {
            appendStringInfoChar(&out, '?');
            ++at;
        }
    }
    return out;
}

// Converts as much of `utf8` as the server encoding holds onto `out`;
// returns the number of bytes taken (0 when the first character is missing).
int convert_some(Oid proc, int encoding, const unsigned char *utf8, int length,
                 StringInfo out)
{
    if (!OidIsValid(proc)) { // no catalog access: ASCII is the same everywhere
        int ascii = 0;
        while (ascii < length && !IS_HIGHBIT_SET(utf8[ascii]))
            ++ascii;
        appendBinaryStringInfo(out, reinterpret_cast<const char *>(utf8), ascii);
        return ascii;
    }
    int room = length * MAX_CONVERSION_GROWTH + 1;
    enlargeStringInfo(out, room);
    auto *target = reinterpret_cast<unsigned char *>(out->data + out->len);
    int taken = pg_do_encoding_conversion_buf(proc, PG_UTF8, encoding,
                                              const_cast<unsigned char *>(utf8), length,
                                              target, room, true);
    out->len += strlen(reinterpret_cast<char *>(target));
    return taken;
}

} // namespace

char *to_server_lossy(const char *utf8, int length)
{
    StringInfoData clean = valid_utf8(utf8, length);
    int encoding = GetDatabaseEncoding();
    if (encoding == PG_UTF8 || encoding == PG_SQL_ASCII)
        return clean.data;
    // Looking up the conversion needs the catalogs, so a transaction.
    Oid proc = IsTransactionState() ? FindDefaultConversionProc(PG_UTF8, encoding) : InvalidOid;
    StringInfoData out;
    initStringInfo(&out);
    const auto *next = reinterpret_cast<const unsigned char *>(clean.data);
    int remaining = clean.len;
    while (remaining > 0) {
        int taken = convert_some(proc, encoding, next, remaining, &out);
        next += taken;
        remaining -= taken;
        if (remaining > 0) { // a character the server encoding lacks
            int n = Min(pg_utf_mblen(next), remaining);
            appendStringInfoChar(&out, '?');
            next += n;
            remaining -= n;
        }
    }
    pfree(clean.data);
    return out.data;
}

char *server_text(const std::string &utf8)
{
    return pg_call([&] { return to_server_lossy(utf8.data(), static_cast<int>(utf8.size())); });
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
