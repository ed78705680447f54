-- Loaded by test/scenarios/border.sh into a throwaway cluster.
CREATE FUNCTION border_test_throw(rounds integer) RETURNS text
    AS 'dfend_border_test', 'border_test_throw' LANGUAGE C STRICT;
