"""The built-in failure patterns: families of error texts, by category.

Each pattern describes a *family* of failures as libraries and runtimes word
them (Python, Node.js, Ruby, Go, Java, .NET, PHP, the SQL servers, AWS, HTTP
APIs), not one library's sentence. `recoveryd.classify` runs them with RE2,
case-insensitively; ``(?-i:...)`` marks the few words whose case matters
(Redis and gRPC status words, environment variable names).

When several patterns match one text the highest rank wins, then the
earliest in the list: a specific phrase ("lock wait timeout") outranks a
generic one ("timeout"), and rate limiting, listed first, wins a tie, so a
403 or 503 that says "rate limit" or "slow down" is rate limited.
"""

from __future__ import annotations

import msgspec

from recoveryd.categories import (
    BUSINESS,
    CONFIG,
    DATA,
    NETWORK,
    RATE_LIMITED,
    SYSTEM,
    TEMPORARY,
)

__all__ = [
    "BUILTIN_PATTERNS",
    "NORMAL",
    "STRONG",
    "TYPE_PATTERNS",
    "WEAK",
    "BuiltinPattern",
    "status_category",
]

STRONG = 3
"""A phrase that names the cause outright (deadlock, ENOSPC, rate limit)."""
NORMAL = 2
"""A phrase that usually names the cause."""
WEAK = 1
"""A generic phrase (not found, timed out, internal error): a last resort."""


class BuiltinPattern(msgspec.Struct, frozen=True):
    """One family of failures: a stable dotted name, a category, a regex."""

    name: str
    category: str
    regex: str
    rank: int = NORMAL


def _P(name: str, category: str, rank: int, *alternatives: str) -> BuiltinPattern:
    """A pattern whose regex is any of `alternatives` (each a whole regex)."""
    return BuiltinPattern(name, category, "|".join(alternatives), rank)


# The tables below are laid out by hand, one family per entry and related
# alternatives per line, which the formatter would otherwise take apart.
# fmt: off
_RATE_LIMITED = (
    _P("rate_limit.rate_limit", RATE_LIMITED, STRONG,
       r"rate[ _-]?limit|\brate (?:was )?exceeded",
       r"exceeded (?:the |your )?(?:\w+ )?rate\b|rate of requests|\brequest rate\b",
       r"sending rate|concurren(?:t|cy) (?:request |execution )?limit"),
    _P("rate_limit.too_many_requests", RATE_LIMITED, STRONG,
       r"too[ _-]?many[ _-]?requests|too many 429",
       r"too many (?:\w+ )?(?:attempts|calls|retries)"),
    _P("rate_limit.throttled", RATE_LIMITED, STRONG,
       r"throttl|slow[ _-]?down\b|reduce your request",
       r"flood[ _-]?(?:control|wait|limit)",
       r"es_rejected_execution|rejected execution"),
    _P("rate_limit.throughput_exceeded", RATE_LIMITED, STRONG,
       r"throughput[^\n]*exceed|exceed[^\n]*throughput",
       r"request ?limit ?exceeded|\blimitexceeded"),
    _P("rate_limit.per_window_quota", RATE_LIMITED, STRONG,
       r"(?:limit|quota|exceed|maximum|allowed|reached)[^\n]*"
       r"(?:\bper |/ ?)(?:second|sec|minute|min|hour)\b",
       r"(?:\bper |/ ?)(?:second|sec|minute|min|hour)\b[^\n]*"
       r"(?:limit|quota|exceed|maximum|reached)",
       r"\((?:rps|rpm|tpm|qps)\)"),
    _P("rate_limit.quota_exceeded", RATE_LIMITED, WEAK,
       r"quota[ _-]?(?:exceeded|exhausted|reached)|exceeded (?:the |your )?quota",
       r"resource[ _]?exhausted"),
)

_TEMPORARY = (
    _P("temporary.deadlock", TEMPORARY, STRONG,
       r"deadlock|\b40p01\b"),
    _P("temporary.serialization_conflict", TEMPORARY, STRONG,
       r"could not serialize access|serialization ?failure|sqlstate\W{0,3}40001",
       r"concurrent update|(?:write|transaction|version)[ _]?conflict",
       r"conflicting (?:concurrent )?transaction|transaction is ongoing",
       r"optimistic ?lock|stale ?(?:object|state|element)",
       r"(?:try )?restart(?:ing)? (?:the )?transaction|retry the transaction",
       r"statuscode\.aborted|\b10 (?-i:ABORTED)"),
    _P("temporary.lock_timeout", TEMPORARY, STRONG,
       r"lock wait timeout|lock[ _]timeout|lock request time ?out",
       r"could not obtain lock|lock ?not ?available|cannotacquirelock",
       r"(?:failed|unable|cannot|could not) to acquire (?:a |the )?lock",
       r"database (?:table )?is locked|sqlite_busy|database is busy",
       r"waiting for (?:a |the )?lock|cannot be accessed right now",
       r"currently (?:being )?(?:accessed|locked|modified) by another",
       r"another (?:\w+ )?(?:request|process)[^\n]*currently accessing"),
    _P("temporary.statement_timeout", TEMPORARY, STRONG,
       r"statement[ _]timeout|canceling statement due to|query ?cancel(?:l)?ed",
       r"query (?:execution )?(?:was )?(?:interrupted|timed out)|query timeout",
       r"maximum statement execution time|execution timeout expired"),
    _P("temporary.too_many_connections", TEMPORARY, STRONG,
       r"too many (?:connections|clients)|connection slots are reserved",
       r"max(?:imum)? number of (?:connections|clients)",
       r"connection limit exceeded|max_connections"),
    _P("temporary.pool_exhausted", TEMPORARY, STRONG,
       r"pool (?:is )?(?:exhausted|full)|queuepool limit|pool ?timeout",
       r"pool timed out|no connection available|maxconnectionserror",
       r"time(?:d)? ?out (?:fetching|waiting for|acquiring) (?:a |an )?"
       r"(?:new |pooled |available |idle )?connection",
       r"(?:unable to|could not|cannot) (?:get|obtain|acquire) (?:a )?"
       r"(?:new )?connection (?:from|within)",
       r"connection is not available, request timed out"),
    _P("temporary.peer_not_ready", TEMPORARY, STRONG,
       r"(?-i:\b(?:LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|NOREPLICAS))\b",
       r"loading the dataset|busy running a script|failover in progress",
       r"read ?only replica|(?-i:\bREADONLY\b)|read-only option",
       r"cluster is down|link with master is down",
       r"database system is (?:starting up|shutting down|in recovery)",
       r"not (?:writable )?primary|\bnot master\b|node is recovering",
       r"not ?leader ?for ?partition|leader ?not ?available",
       r"rebalance in progress|coordinator ?not ?available",
       r"oom command not allowed|circuit_breaking_exception"),
    _P("temporary.overloaded", TEMPORARY, NORMAL,
       r"overloaded|over ?capacity|at capacity|too busy|high demand|heavy load",
       r"(?:server|system|service) (?:is )?(?:too |currently )?busy"),
    _P("temporary.service_unavailable", TEMPORARY, NORMAL,
       r"service ?(?:is )?(?:temporarily |currently )?unavailable",
       r"temporarily unavailable|server (?:is )?(?:currently )?unavailable",
       r"unable to handle (?:the |this )?request",
       r"maintenance mode|under maintenance"),
    _P("temporary.smtp_transient", TEMPORARY, NORMAL,
       r"\b4[25]\d[ ,-]+b?['\"]?4\.\d{1,3}\.\d{1,3}",
       r"greylist|mailbox (?:temporarily )?(?:busy|unavailable)"),
    _P("temporary.internal_error", TEMPORARY, WEAK,
       r"internal ?(?:server )?error|internal ?failure|statuscode\.internal",
       r"something went wrong",
       r"server encountered an? (?:internal |unexpected )?error"),
    _P("temporary.try_again", TEMPORARY, WEAK,
       r"try again|retry (?:the |your )?(?:request|operation) ?(?:later)?",
       r"retry later|transient (?:error|failure)",
       r"temporary (?:error|failure|problem|issue)"),
)

_SYSTEM = (
    _P("system.out_of_memory", SYSTEM, STRONG,
       r"out of memory|outofmemory|memoryerror|nomemoryerror",
       r"cannot allocate memory|failed to allocate|allocation failed",
       r"\benomem\b|errno 12\b|bad_alloc|oom[ -]?kill",
       r"memory (?:limit|exhausted)|allowed memory size of \d+ bytes exhausted",
       r"heap (?:limit|space)|(?:insufficient|not enough) memory",
       r"low on resource"),
    _P("system.disk_full", SYSTEM, STRONG,
       r"no space left|\benospc\b|errno 28\b",
       r"disk (?:is )?full|disk quota exceeded|\bedquot\b|errno 122\b",
       r"database or disk is full|not enough (?:disk )?space",
       r"insufficient (?:disk |storage )?space",
       r"(?:device|file ?system|volume) is full|could not extend file",
       r"the table '[^'\n]*' is full|flood[ _-]stage"),
    _P("system.too_many_open_files", SYSTEM, STRONG,
       r"too many open files|too many files open|out of file descriptors",
       r"\bemfile\b|\benfile\b|errno 2[34]\b|file table overflow"),
    _P("system.thread_limit", SYSTEM, STRONG,
       r"(?:can't|cannot|unable to|failed to) (?:start|create|spawn) "
       r"(?:a )?(?:new )?(?:native )?thread",
       r"pthread_create|too many threads"),
    _P("system.resource_unavailable", SYSTEM, STRONG,
       r"resource temporarily unavailable|\beagain\b|errno 11\b|\bewouldblock\b",
       r"cannot fork|fork failed|fork: retry"),
    _P("system.process_killed", SYSTEM, NORMAL,
       r"signal (?:9|15)\b|\bsigkill\b|\bsigterm\b|\bsigsegv\b",
       r"killed by signal|\bkilled\b|exited prematurely",
       r"exit (?:status|code):? 13[47]\b|exitcode[=: ]+-?(?:9|15|137)\b",
       r"terminated (?:unexpectedly|abruptly)|worker ?lost|work-?horse",
       r"process pool was terminated|brokenprocesspool|died with <signals",
       r"segmentation fault|core dumped"),
    _P("system.time_limit", SYSTEM, STRONG,
       r"time ?limit ?exceeded",
       r"maximum execution time of \d+ seconds? exceeded"),
    _P("system.local_file_denied", SYSTEM, STRONG,
       r"accessdeniedexception: (?:/|[a-z]:\\)",
       r"access to the path [^\n]* is denied"),
    _P("system.permission_denied", SYSTEM, NORMAL,
       r"permission denied|\beacces\b|errno 13\b|\beperm\b",
       r"operation not permitted|access is denied",
       r"read-only file ?system|\berofs\b|errno 30\b|readonly database"),
    _P("system.io_error", SYSTEM, NORMAL,
       r"disk i/o error|input/output error|\beio\b|errno 5\b"),
)

_NETWORK = (
    _P("network.dns_failure", NETWORK, STRONG,
       r"name or service not known|temporary failure in name resolution",
       r"failed to resolve|name ?resolution|nodename nor servname",
       r"getaddrinfo|\benotfound\b|\beai_again\b|\beai_noname\b",
       r"no such host|could not (?:resolve|translate) host",
       r"unknown ?host|unknown (?:mysql )?server host|host not found",
       r"unable to resolve|dns (?:lookup|resolution|error|failure|failed)",
       r"errno -[235]\b|errno 11001\b",
       r"no address associated with hostname|name does not resolve"),
    _P("network.connection_refused", NETWORK, STRONG,
       r"connection ?refused|\beconnrefused\b|errno 111\b|error 111 connecting",
       r"connect call failed|actively refused|refused to connect",
       r"is the server running|accepting (?:tcp/ip )?connections"),
    _P("network.connection_reset", NETWORK, STRONG,
       r"connection ?(?:was )?reset|\beconnreset\b|errno 104\b",
       r"reset by peer|forcibly closed"),
    _P("network.unreachable", NETWORK, STRONG,
       r"network (?:is )?unreachable|\benetunreach\b|\behostunreach\b",
       r"\benetdown\b|no route to host|host (?:is )?unreachable",
       r"network is down|errno 10[13]\b|errno 113\b"),
    _P("network.peer_closed", NETWORK, NORMAL,
       r"(?:remote end|remote host|peer|server|host) (?:unexpectedly )?"
       r"(?:closed|disconnected|dropped|hung up)",
       r"remote ?disconnected|closed (?:the )?connection (?:unexpectedly|without)",
       r"connection (?:was |has been )?(?:unexpectedly )?closed",
       r"connection closed by|connection \S+ to \S+ (?:was )?closed",
       r"socket hang ?up|socket (?:disconnected|closed)",
       r"use of closed network connection"),
    _P("network.connection_lost", NETWORK, NORMAL,
       r"connection (?:aborted|lost|dropped|interrupted)|\beconnaborted\b",
       r"lost connection to|server has gone away|server terminated abnormally",
       r"terminating connection due to (?:administrator|admin)|adminshutdown"),
    _P("network.broken_pipe", NETWORK, STRONG,
       r"broken ?pipe|\bepipe\b|errno 32\b"),
    _P("network.tls_interrupted", NETWORK, NORMAL,
       r"eof occurred in violation of protocol|unexpected_eof_while_reading",
       r"sslerror\(sslEOFError|\bsslEOFError\b|ssl syscall error",
       r"handshake (?:operation )?(?:timed out|timeout)",
       r"before secure tls connection was established"),
    _P("network.incomplete_response", NETWORK, NORMAL,
       r"incomplete ?read|complete message body|response ended prematurely",
       r"prematurely closed|premature close|chunkedencodingerror"),
    _P("network.connect_timeout", NETWORK, NORMAL,
       r"connect(?:ion)?[ _-]?time[ _-]?out|connect(?:ion)? timed out",
       r"time(?:d)?[ _-]?out (?:while )?(?:connecting|trying to connect)",
       r"\betimedout\b|errno 110\b|open[ _]?timeout|connection attempt failed",
       r"did not properly respond after a period of time"),
    _P("network.read_timeout", NETWORK, NORMAL,
       r"read[ _-]?time[ _-]?out|read timed out",
       r"time(?:d)?[ _-]?out (?:while )?"
       r"(?:reading|waiting for (?:the )?response)",
       r"socket ?time[ _-]?out|\besockettimedout\b|i/o timeout",
       r"request ?time(?:d)?[ _-]?out|timeout exceeded|time ?out expired",
       r"httpclient\.timeout|awaiting headers|operation timed out"),
    _P("network.deadline_exceeded", NETWORK, NORMAL,
       r"deadline[ _]exceeded|deadline expired|timeoutexception"),
    _P("network.bad_gateway", NETWORK, NORMAL,
       r"bad gateway|gateway time-?out|no healthy upstream",
       r"upstream (?:connect error|request timeout|timed out|prematurely)"),
    _P("network.rpc_unavailable", NETWORK, NORMAL,
       r"statuscode\.unavailable|\b14 (?-i:UNAVAILABLE)",
       r"grpc[^\n]*(?-i:UNAVAILABLE)",
       r"no ?brokers ?available|broker transport failure"),
    _P("network.connect_failed", NETWORK, WEAK,
       r"(?:could ?n[o']t|can[' ]?n?[o']?t|cannot|unable to|failed to) "
       r"(?:connect|reach|establish (?:a )?(?:new )?connection"
       r"|open (?:a )?(?:tcp )?connection)",
       r"connection (?:error|failure|failed)|no connection could be made",
       r"fetch failed|network ?error"),
    _P("network.timeout", NETWORK, WEAK,
       r"\btimed? ?out\b|\btimeout\b"),
)

_CONFIG = (
    _P("config.auth_failed", CONFIG, STRONG,
       r"authenticat\w* (?:failed|failure|error|required|unsuccessful)",
       r"(?:login|logon|sign[ -]?in) (?:failed|refused|denied|incorrect)",
       r"login was refused|access_refused|access denied for user",
       r"(?:invalid|bad|wrong|incorrect) (?:credentials|password|username"
       r"|user ?name|login|client secret)",
       r"(?:username|password|credentials?) (?:and password )?"
       r"(?:are |were |was |is )?(?:not accepted|rejected|incorrect|invalid)",
       r"not authenticated|unauthenticated",
       r"authenticationerror|authenticationfailed",
       r"invalid_grant|invalid_client|unauthorized_client",
       r"(?-i:\b(?:NOAUTH|WRONGPASS|NOPERM))\b"),
    _P("config.access_denied", CONFIG, STRONG,
       r"access ?denied|not authori[sz]ed to (?:perform|access)",
       r"authorization ?(?:error|failed|denied)",
       r"(?:do|does) ?n[o']t have (?:the )?(?:required |necessary )?"
       r"(?:permission|access|privilege)",
       r"insufficient ?(?:privilege|permission|scope)",
       r"permission denied for (?:table|relation|schema|database|sequence"
       r"|function|view|column)",
       r"permission denied \(publickey",
       r"(?-i:PERMISSION_DENIED)|permissiondenied",
       r"lacks? (?:the )?(?:required )?permission"),
    _P("config.invalid_api_key", CONFIG, STRONG,
       r"api[ _-]?key|(?:access|secret)[ _-]?key",
       r"signature ?(?:does ?not ?match|mismatch|expired)|invalidsignature",
       r"(?:security|access|auth|authentication|bearer|api|session|refresh"
       r"|oauth|id) token[^\n]*(?:invalid|expired|revoked|malformed)",
       r"(?:invalid|expired|revoked|malformed) (?:security|access|auth|bearer"
       r"|api|session|refresh|oauth|id) token",
       r"expired ?token|token (?:has )?expired|jwt (?:expired|malformed)",
       r"unrecognizedclient|invalidclienttokenid"),
    _P("config.credentials_missing", CONFIG, STRONG,
       r"unable to locate credentials|no credentials",
       r"credentials? (?:were |was |are |is )?"
       r"(?:not found|missing|not configured|not provided)",
       r"missing credentials|could not load credentials",
       r"must specify a region|noregionerror",
       r"region (?:is )?(?:not configured|missing|required)"),
    _P("config.missing_setting", CONFIG, STRONG,
       r"missing (?:required )?(?:environment variable|env var|setting"
       r"|config(?:uration)? (?:value|key|option|variable))",
       r"environment variable[^\n]*(?:not set|missing|required|undefined)",
       r"settings? (?:are |is )?not configured",
       r"\bsetting\b[^\n]*(?:must not be empty|not set|is required|missing)",
       r"improperly ?configured|misconfigur|not configured",
       r"config(?:uration)? ?(?:error|invalid|problem|file not found)",
       r"invalid config(?:uration)?|unable to configure",
       r"validation errors? for \w*(?:settings|config)\b",
       # An environment variable's name, alone (a KeyError) or after Ruby's
       # "key not found", is a setting the deployment lacks.
       r"key not found: (?-i:\W?[A-Z][A-Z0-9]*_[A-Z0-9_]+)",
       r"^\W{0,2}(?-i:[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9])\W{0,2}$"),
    _P("config.missing_parameter", CONFIG, STRONG,
       r"missing required (?:param|parameter|argument|option)",
       r"required (?:param|parameter)s? (?:is |are )?missing|missingparameter"),
    _P("config.missing_schema_object", CONFIG, STRONG,
       r"(?:relation|table|column|function|procedure|database|schema|role"
       r"|sequence|view|extension|catalog|keyspace)\W+\S*\W*"
       r"(?:does ?n[o']t exist|not found)",
       r"no such (?:table|column|function|database|collection|keyspace)",
       r"unknown (?:column|table|database|catalog|storage engine|collation"
       r"|character set|charset)",
       r"undefined ?(?:table|column|function|object)",
       r"invalid object name|table or view does not exist",
       r"base table or view not found|no function matches"),
    _P("config.missing_resource", CONFIG, STRONG,
       r"(?:bucket|queue|topic|stream|function|secret|parameter|exchange"
       r"|vhost|virtual host|index|namespace|repository|model)\W+\S*\W*"
       r"(?:does ?n[o']t exist|not found)",
       r"\bno (?:such )?(?:bucket|queue|topic|exchange|index|secret|vhost)\b",
       r"(?:find|locate) the (?:specified |requested )?"
       r"(?:secret|bucket|queue|topic|table|function|parameter)",
       r"resourcenotfoundexception|queuedoesnotexist|nonexistentqueue",
       r"index_not_found|unknown ?topic|model_not_found",
       r"(?-i:NOGROUP)|consumer group"),
    _P("config.missing_dependency", CONFIG, STRONG,
       r"no module named|cannot find module|cannot load such file",
       r"modulenotfounderror|cannot import name|importerror",
       r"could not (?:load|find) (?:file or )?assembly",
       r"classnotfoundexception|noclassdeffounderror",
       r"class ['\"]?[\w\\.]+['\"]? not found",
       r"undefined symbol|error while loading shared libraries",
       r"cannot open shared object|isn't an available (?:database )?backend",
       r"command not found|executable file not found",
       r"not recognized as an internal or external command",
       r"call to undefined function"),
    _P("config.certificate", CONFIG, STRONG,
       r"certificate[ _]verify[ _]failed|self[- ]signed certificate",
       r"unable to (?:get|verify) (?:the )?(?:local )?(?:issuer )?"
       r"(?:first )?certificate",
       r"unable_to_verify_leaf_signature|cert(?:ificate)?[ _](?:has[ _])?expired",
       r"hostname mismatch|doesn't match (?:either of )?'",
       r"certificate is not valid for|x509:|pkix path",
       r"sslcertverificationerror|certificateerror",
       r"does not support ssl|ssl (?:is |was )?required|wrong version number",
       r"server gave http response to https client"),
    _P("config.bad_url", CONFIG, STRONG,
       r"missing an? '?https?://|no connection adapters|unknown url type",
       r"invalid (?:url|uri)|malformed ?url|no scheme supplied",
       r"unsupported (?:url )?(?:protocol|scheme)",
       r"invalidschema|missingschema|unsupportedprotocol",
       r"too many redirects|exceeded \d+ redirects|redirect loop",
       r"max(?:imum)? (?:number of )?redirects"),
    _P("config.sql_syntax", CONFIG, STRONG,
       r"syntax error at or near|syntax error at end of input",
       r"near \"[^\"\n]*\": syntax error|error in your sql syntax",
       r"incorrect syntax near"),
    _P("config.server_feature", CONFIG, STRONG,
       r"unknown command|cluster support disabled",
       r"db index is out of range|invalid db index",
       r"(?-i:\b(?:CROSSSLOT|NOSCRIPT)\b)",
       r"statuscode\.unimplemented|(?-i:\bUNIMPLEMENTED\b)"),
    _P("config.sender_not_verified", CONFIG, STRONG,
       r"(?:email address|identity|identities|sender|domain)[^\n]*not verified",
       r"identities failed the check"),
    _P("config.not_registered", CONFIG, STRONG,
       r"unregistered task|task [^\n]* not registered|notregistered",
       r"no handler (?:registered|found) for"),
    _P("config.file_missing", CONFIG, NORMAL,
       r"no such file or directory|\benoent\b|errno 2\b",
       r"filenotfound|file not found|could not find file",
       r"(?:unable|failed) to open (?:database )?file",
       r"cannot open (?:file|database)"),
    _P("config.unauthorized", CONFIG, WEAK,
       r"unauthori[sz]ed|\bforbidden\b"),
)

_DATA = (
    _P("data.constraint_violation", DATA, STRONG,
       r"constraint ?(?:failed|fails|violat)|violates (?:[\w-]+ )+constraint",
       r"violation of [\w ]+ constraint|\bunique constraint\b",
       r"integrity ?(?:constraint|error)|duplicate (?:key|entry)|\be11000\b",
       r"(?:unique|not ?null|foreign ?key|check|exclusion) ?violation",
       r"cannot (?:add or update|delete or update) a (?:child|parent) row",
       r"cannot be null|cannot insert (?:the value )?null",
       r"cannot insert duplicate|sqlstate\W{0,3}23"),
    _P("data.column_value", DATA, STRONG,
       r"invalid input (?:syntax|value) for|invalid byte sequence for encoding",
       r"(?:data|value) too (?:long|large) for",
       r"numeric (?:field|value) (?:overflow|out of range)|out of range value",
       r"incorrect (?:integer|decimal|datetime|date|string|double) value",
       r"truncated incorrect|cannot store \w+ value in \w+ column",
       r"datatype mismatch|would be truncated|right ?truncation",
       r"conversion failed when converting|field value out of range",
       r"sqlstate\W{0,3}22"),
    _P("data.redis_value", DATA, STRONG,
       r"(?-i:WRONGTYPE)|wrong kind of value",
       r"is not an? (?:valid )?(?:integer|float)|not an integer or out of range",
       r"invalid expire time|id specified in xadd|invalid input of type",
       r"attempt to (?:perform arithmetic|compare|index|concatenate|call)"
       r"[^\n]*(?:nil|boolean|table|string|number)"),
    _P("data.json_malformed", DATA, STRONG,
       r"(?:invalid|malformed|bad|unexpected|unparse?able) (?:\w+ )?json",
       r"json[^\n]*(?:pars|decod|syntax|invalid|malformed|unterminated)",
       r"(?:pars|decod|deseriali[sz])\w*[^\n]*json",
       r"expecting (?:property name|value|'\S' delimiter)",
       r"unterminated string|extra data: line",
       r"unexpected (?:token|character|end of (?:json )?input)",
       r"not valid json|invalid start of a value",
       r"invalid character '[^'\n]{1,6}' (?:looking for|after|in)",
       r"cannot unmarshal|cannot deserialize|unrecognized token"),
    _P("data.serialization", DATA, NORMAL,
       r"not (?:json )?serializable|converting circular structure",
       r"(?:cannot|could not|unable to|failed to) (?:be )?(?:serialize|encode)",
       r"serialization (?:error|failed)"),
    _P("data.markup_malformed", DATA, STRONG,
       r"while (?:parsing|scanning) a|while scanning for the next token",
       r"cannot start any token|could not find expected|did not find expected",
       r"mapping values are not allowed|expected <block end>",
       r"mismatched tag|not well-formed|xml ?syntax ?error",
       r"saxparseexception|premature end of file|junk after document",
       r"unclosed token|\(at (?:line \d+, column \d+|end of document)\)"),
    _P("data.csv_malformed", DATA, STRONG,
       r"field larger than field limit|expected after '\"'",
       r"unquoted field|(?:unclosed|illegal|malformed) quot",
       r"malformedcsv|line contains nul"),
    _P("data.encoding", DATA, STRONG,
       r"codec can't (?:decode|encode)|invalid (?:continuation|start) byte",
       r"ordinal not in range|(?:invalid|malformed) utf-?8",
       r"incorrect string value|undefinedconversionerror|invalidbytesequence",
       r"\bfrom [\w-]+ to utf-?8\b|ascii-8bit"),
    _P("data.validation_failed", DATA, NORMAL,
       r"validation (?:failed|error)|failed validat",
       r"validationerror|validationexception|\d+ validation errors? for",
       r"one or more (?:parameter values were invalid|validation errors)",
       r"field validation for|invalid_type|field required|input should be",
       r"is a required (?:property|field)|must be a valid",
       r"should be non-empty|additional properties|is not (?:one of|of type)",
       r"constraintviolation|unprocessable|invalid[_ ]argument"),
    _P("data.format", DATA, NORMAL,
       r"incorrect padding|invalid base64|badly formed|invalid uuid",
       r"does not appear to be an ipv[46]",
       r"time data [^\n]* does not match format",
       r"invalid isoformat|out of range for month|month must be in",
       r"conversionsyntax|invalidoperation",
       r"invalid literal for|could not convert",
       r"not in a correct format|numberformatexception"),
    _P("data.too_large", DATA, NORMAL,
       r"entity ?too ?large|payload too large|request too large",
       r"exceeds the maximum (?:allowed )?(?:size|length)",
       r"(?:file|message|body|upload|request|item|document|attachment|record)"
       r" (?:size )?(?:is )?too (?:large|big)",
       r"maximum context length|context[_ ]length|prompt is too long"),
    _P("data.parse_error", DATA, WEAK,
       r"pars(?:e|ing|er) ?error|syntaxerror",
       r"(?:failed|unable|could not|cannot|can't) (?:to )?parse"),
    _P("data.invalid_value", DATA, WEAK,
       r"\binvalid (?:value|input|format|data|parameter|argument|type|payload"
       r"|field|email|phone|date|time|datetime|number|integer|float|decimal"
       r"|amount|character|literal|length|enum|id|identifier|request)",
       r"\bis (?:not valid|invalid)\b|not a valid",
       r"bad (?:format|input|value)|malformed|bad request",
       r"wrong type|type mismatch|invalid[_ ]request",
       r"must be (?:at least|at most|greater|less|between|positive"
       r"|non-?negative|one of|an? (?:integer|number|string|array|object))",
       r"is less than the minimum|is greater than the maximum",
       r"does not match '|cannot (?:convert|cast|coerce)"),
    _P("data.out_of_range", DATA, WEAK,
       r"out[ _]of[ _]range|would overflow|\boverflow|\btoo (?:long|short)\b",
       r"division by zero|divide by zero|divisionbyzero|zerodivision"),
    _P("data.wrong_type", DATA, WEAK,
       r"unsupported operand type|can only concatenate",
       r"indices must be integers|object is not (?:subscriptable|iterable)",
       r"'nonetype' object|nil:nilclass",
       r"cannot read propert(?:y|ies) of (?:undefined|null)",
       r"nullpointerexception|null reference|invalid ?cast|classcast",
       r"missing \d+ required positional argument",
       r"index out of range|\bkey not found\b"),
)

_BUSINESS = (
    _P("business.card_declined", BUSINESS, STRONG,
       r"declined|do_not_honou?r|insufficient[_ ]funds",
       r"card (?:has )?expired|expired[_ ]card",
       r"(?:security code|cvc|cvv)\b[^\n]*(?:incorrect|invalid)",
       r"incorrect_(?:cvc|number)|invalid card",
       r"card number is (?:incorrect|invalid)",
       r"(?:lost|stolen|pickup)_card|fraudulent",
       r"payment (?:was )?(?:failed|refused|rejected)"),
    _P("business.plan_quota", BUSINESS, STRONG,
       r"(?:monthly|daily|annual|yearly|plan|subscription|billing|free[- ]tier)"
       r"\b[^\n]*(?:quota|limit|allowance|credits?)\b[^\n]*"
       r"(?:exhausted|exceeded|reached|used up)",
       r"(?:exhausted|exceeded|reached|used up)[^\n]*(?:monthly|daily|annual"
       r"|yearly|plan|subscription|billing|free[- ]tier)\b[^\n]*"
       r"(?:quota|limit|allowance|credits?)\b",
       r"(?:quota|limit)[^\n]*(?:\bplan\b|billing|upgrade|month)",
       r"upgrade (?:your plan|to continue|your subscription)",
       r"exceeded your current quota|insufficient_quota",
       r"billing (?:hard )?limit|out of credits|credit balance is too low"),
    _P("business.already_done", BUSINESS, NORMAL,
       r"already (?:been )?(?:shipped|cancell?ed|refunded|captured|paid"
       r"|processed|completed|fulfilled|redeemed|used|delivered|closed"
       r"|confirmed|voided|archived|deleted|submitted|exists)",
       r"(?:cannot|can't|could not|unable to) be (?:shipped|cancell?ed"
       r"|refunded|captured|processed|fulfilled|updated|modified|deleted"
       r"|delivered|paid|renewed|activated|upgraded|downgraded|transferred"
       r"|reserved|booked|redeemed|applied|accepted|issued)",
       r"cannot (?:cancel|refund|ship|capture)\b"),
    _P("business.invalid_state", BUSINESS, NORMAL,
       r"has a status of|(?:invalid|unexpected|wrong|final|terminal) state",
       r"invalid (?:state|status) transition|idempoten",
       r"conditional (?:request|check) ?failed",
       r"precondition ?failed|failed[_ ]precondition"),
    _P("business.stock_or_funds", BUSINESS, NORMAL,
       r"insufficient (?:stock|inventory|balance|credit|quantity)",
       r"out of stock|sold out",
       r"not enough (?:stock|inventory|balance|credit|funds|seats)",
       r"has \d+ available|only \d+ (?:left|available|remaining)",
       r"exceeds (?:the )?(?:available|remaining|captured|refundable"
       r"|authori[sz]ed|credit|account)",
       r"(?:amount|quantity|qty)\b[^\n]*exceeds"),
    _P("business.account_state", BUSINESS, NORMAL,
       r"account(?: \S+)? (?:has been |is |was )?(?:suspended|closed|disabled"
       r"|deactivated|frozen|blocked|banned|terminated|on hold)",
       r"accountsuspended|opted[ -]out|on (?:the )?suppression list",
       r"(?:endpoint|recipient|subscriber|device|customer|number) "
       r"(?:is |has been )?(?:disabled|unsubscribed|opted out|blocked"
       r"|blacklisted|suppressed|deactivated)"),
    _P("business.rule_violation", BUSINESS, NORMAL,
       r"business rule|not eligible|ineligible|undeliverable",
       r"(?:courier|carrier|shipping|destination|country|currency)\b[^\n]*"
       r"(?:not supported|unsupported|not available)",
       r"not supported for (?:destination|country|this|your)",
       r"not supported by (?:the )?(?:carrier|courier|provider|bank|issuer)",
       r"address (?:is )?(?:not verified|unverified|invalid)",
       r"no longer (?:offered|available|active|valid|sold|supported for)"),
    _P("business.tracking_invalid", BUSINESS, NORMAL,
       r"tracking[ _-]?(?:number|no|code|id)\b[^\n]*"
       r"(?:invalid|not valid|unknown|failed|incorrect)",
       r"invalid tracking"),
    _P("business.offer_invalid", BUSINESS, NORMAL,
       r"(?:coupon|voucher|promo(?:tion)?(?: code)?|discount(?: code)?"
       r"|gift ?card|referral code)\b[^\n]*(?:expired|invalid|not valid"
       r"|already (?:used|redeemed)|exhausted|no longer|not applicable)",
       r"(?:expired|invalid) (?:coupon|voucher|promo)"),
    _P("business.payment_required", BUSINESS, NORMAL,
       r"payment ?required"),
    _P("business.not_found", BUSINESS, WEAK,
       r"not[ _]?found|does ?n[o']t exist|no such",
       r"(?:could ?n[o']t|can ?n[o']t|cannot|unable to) find",
       r"no (?:record|row|result|entry|document|item)s? found|no ?data ?found"),
    _P("business.conflict", BUSINESS, WEAK,
       r"\bconflict\b"),
)
# fmt: on

BUILTIN_PATTERNS: tuple[BuiltinPattern, ...] = (
    *_RATE_LIMITED,
    *_TEMPORARY,
    *_SYSTEM,
    *_NETWORK,
    *_CONFIG,
    *_DATA,
    *_BUSINESS,
)
"""Message patterns, tried on the error text and a traceback's root cause."""

# fmt: off
TYPE_PATTERNS: tuple[BuiltinPattern, ...] = (
    _P("type.rate_limited", RATE_LIMITED, STRONG,
       r"rate ?limit|toomanyrequests|throttl|slowdown|floodwait",
       r"provisionedthroughputexceeded|requestlimitexceeded|\blimitexceeded"),
    _P("type.local_permission", SYSTEM, STRONG,
       r"^(?:builtins\.)?permissionerror$|errno::e(?:acces|perm|rofs)",
       r"unauthorizedaccessexception|nio\.file\.accessdenied"),
    _P("type.system", SYSTEM, STRONG,
       r"memoryerror|outofmemory|nomemory",
       r"workerlost|brokenprocesspool|brokenexecutor",
       r"e(?:nospc|mfile|nfile|nomem|again)\b|blockingioerror",
       r"timelimitexceeded|killed|oomkilled"),
    _P("type.temporary", TEMPORARY, STRONG,
       r"deadlock|serializationfailure|locknotavailable|locktimeout|lockwait",
       r"querycanceled|statementtimeout|busyloading|readonlyerror|tryagain",
       r"serviceunavailable|internalservererror|overloaded",
       r"transactionconflict|writeconflict|clusterdown|maxconnections",
       r"connectiontimeouterror|pooltimeout|staleobject|optimisticlock"),
    _P("type.config", CONFIG, NORMAL,
       r"improperlyconfigured|config(?:uration)?error|misconfigur",
       r"authenticat|autherror|unauthori[sz]ed|unauthenticated|forbidden",
       r"accessdenied|permissiondenied|permissionerror|authorization",
       r"insufficientprivilege|credential|noregion|invalidaccesskey",
       r"signaturedoesnotmatch|expiredtoken|invalidtoken",
       r"undefined(?:table|column|function|object)",
       r"invalid(?:catalog|schema)name",
       r"modulenotfound|importerror|loaderror|notregistered",
       r"classnotfound|noclassdeffound|filenotfound|\benoent\b",
       r"invalidschema|missingschema|invalidurl|unsupportedprotocol",
       r"toomanyredirects|certverification|certificateerror",
       r"nosuchbucket|queuedoesnotexist|nonexistentqueue|resourcenotfound"),
    _P("type.network", NETWORK, NORMAL,
       r"timeout|timedout|connecterror|connectionerror|connectexception",
       r"connection(?:refused|reset|aborted|closed|failed)|cannotconnect",
       r"brokenpipe|remotedisconnected|incompleteread|protocolerror",
       r"serverdisconnected|gaierror|unknownhost|noroutetohost",
       r"socketexception|httprequestexception|webexception|econn\w+",
       r"\be(?:timedout|hostunreach|netunreach|notfound|pipe)\b|eai_again",
       r"endpointconnectionerror|apiconnectionerror|amqpconnectionerror",
       r"networkerror|nobrokersavailable|servicerequesterror"),
    _P("type.business", BUSINESS, WEAK,
       r"notfound|doesnotexist|nosuchkey|nodatafound",
       r"card(?:error|declined)|paymentrequired|declined|insufficientfunds",
       r"insufficientstock|outofstock|businessrule|notsupported",
       r"conditionalcheckfailed|accountsuspended|endpointdisabled",
       r"quotaexceeded|raiseexception|conflict"),
    _P("type.data", DATA, WEAK,
       r"valid|invalid|pars(?:e|er)|decode|encode|json|yaml|xml|csv|toml",
       r"integrity|unique|notnull|foreignkey|checkviolation|dataerror",
       r"typeerror|valueerror|keyerror|indexerror|zerodivision|divisionbyzero",
       r"unicode|overflow|outofrange|truncation|syntaxerror",
       r"formatexception|numberformat|argumentexception|illegalargument",
       r"invalidcast|classcast|mismatch|recordinvalid|recordnotunique",
       r"serializ|marshal|schema|binascii\.error|_csv\.error|entitytoolarge",
       r"zoderror|invalidoperation|conversionerror|encoding::"),
)
"""Exception-type patterns: a signal below the message, above the status."""
# fmt: on

_STATUS_CATEGORIES: dict[int, str] = {
    **dict.fromkeys((400, 413, 414, 415, 422, 431), DATA),
    **dict.fromkeys((401, 403, 405, 407, 426), CONFIG),
    **dict.fromkeys((402, 404, 409, 410, 412, 451), BUSINESS),
    **dict.fromkeys((408, 502, 504, 521, 522, 523, 524, 598, 599), NETWORK),
    **dict.fromkeys((423, 425), TEMPORARY),
    429: RATE_LIMITED,
}


def status_category(status_code: int) -> str | None:
    """The category an HTTP status suggests on its own, if any.

    Other 5xx are a peer failing for a moment (temporary); other 4xx are a
    request the peer refuses as written (data); 1xx–3xx say nothing.
    """
    if status_code in _STATUS_CATEGORIES:
        return _STATUS_CATEGORIES[status_code]
    if 500 <= status_code <= 599:
        return TEMPORARY
    if 400 <= status_code <= 499:
        return DATA
    return None
