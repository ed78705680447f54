-- TLS: verification is always on; dfend.ca_file trusts a private CA.
\getenv tls_url DFEND_TLS_URL
\getenv tls_ip_url DFEND_TLS_IP_URL
\getenv untrusted_url DFEND_UNTRUSTED_URL
\getenv wronghost_url DFEND_WRONGHOST_URL
\getenv ca_file DFEND_CA_FILE
SET dfend.max_retries = 0;

-- A certificate from a CA the system does not know is refused.
SET dfend.api_url = :'tls_url';
SELECT try_verbose($$SELECT dfend_register_identity('t-1')$$);

-- Trusting the test CA makes it work, by host name or by IP address.
SET dfend.ca_file = :'ca_file';
SELECT created FROM dfend_register_identity('t-1');
SET dfend.api_url = :'tls_ip_url';
SELECT created, merged FROM dfend_register_identity('t-1');

-- A self-signed certificate is refused, CA file or not.
SET dfend.api_url = :'untrusted_url';
SELECT try_verbose($$SELECT dfend_register_identity('t-2')$$);

-- A certificate from the right CA for another host name is refused.
SET dfend.api_url = :'wronghost_url';
SELECT try_verbose($$SELECT dfend_register_identity('t-3')$$);

-- A CA file that cannot be read.
SET dfend.api_url = :'tls_url';
SET dfend.ca_file = '/nonexistent/ca.pem';
SELECT try_verbose($$SELECT dfend_register_identity('t-4')$$);
RESET dfend.ca_file;
RESET dfend.api_url;
