-- Local validation: 22023 (22004 for a NULL user id), before any request.
\! test/emu reset
SELECT try_verbose($$SELECT dfend_register_identity(NULL)$$);
SELECT try_verbose($$SELECT dfend_register_identity('')$$);
SELECT try_verbose($$SELECT dfend_register_identity(repeat('x', 257))$$);
SELECT try($$SELECT dfend_register_identity(repeat('x', 256))$$) AS longest_user_id;

-- Email: one documented rule.
SELECT left(email, 40) AS email, try(format('SELECT dfend_register_identity(%L, %L)', 'v-' || md5(email), email)) AS result
FROM unnest(ARRAY[
    'ada@example.com', 'first.last+tag@sub.example.co.uk', 'o''neil@example.org',
    'plain', '@example.com', 'ada@', 'ada@example', 'ada@@example.com', 'a@b@example.com',
    'ada @example.com', '.ada@example.com', 'ada.@example.com', 'a..b@example.com',
    'ada@-example.com', 'ada@example-.com', 'ada@example.c', 'ada@example.123',
    '"quoted"@example.com', 'ada@[127.0.0.1]', 'ada@exa_mple.com',
    repeat('a', 65) || '@example.com', 'ada@' || repeat('a', 250) || '.com'
]) AS email;
SELECT try_verbose($$SELECT dfend_register_identity('u', 'plain')$$);

-- Phone: E.164.
SELECT phone, try(format('SELECT dfend_register_identity(%L, phone => %L)', 'p-' || phone, phone)) AS result
FROM unnest(ARRAY[
    '+14155550123', '+12', '+123456789012345',
    '+1', '+1234567890123456', '+0123456', '14155550123', '+1 415 555 0123',
    '+1-415-555-0123', '+1(415)5550123', '', '+'
]) AS phone;
SELECT try_verbose($$SELECT dfend_register_identity('u', phone => '415-555')$$);

-- Metadata: an object, not an array or scalar.
SELECT metadata, try(format('SELECT dfend_register_identity(%L, metadata => %L::jsonb)', 'm-' || metadata, metadata)) AS result
FROM unnest(ARRAY['{}', '{"a": {"b": [1, 2]}}', '[1, 2]', '"text"', '42', 'null', 'true']) AS metadata;

-- dfend_get_identity takes exactly one of its arguments.
SELECT try_verbose($$SELECT dfend_get_identity()$$);
SELECT try($$SELECT dfend_get_identity('u', 'idn_1')$$);
SELECT try($$SELECT dfend_get_identity(user_id => NULL, id => NULL)$$);
SELECT try($$SELECT dfend_get_identity('')$$);
SELECT try($$SELECT dfend_get_identity(id => '')$$);

-- Only the valid calls above reached the emulator.
\! test/emu stat posts
\! test/emu stat gets
