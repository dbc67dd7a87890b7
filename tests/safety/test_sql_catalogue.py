"""Catalogues of what must never pass the SQL validator's default allow-list, by dialect.

Names are taken from the PostgreSQL manual (System Information, System Administration, XML
and JSON functions) and the SQLite manual (core, JSON, date/time functions, table-valued
pragma functions); each is written as a query the way a model would write it.
"""

from __future__ import annotations

import pytest

from bastion.safety.validation import SqlPolicy, default_functions, validate_sql

# Session and system information, access privilege inquiry, schema visibility, catalogue
# information, object and comment information, transaction ids and snapshots, control data.
PG_SYSTEM_INFORMATION = (
    "current_catalog",
    "current_database()",
    "current_query()",
    "current_role",
    "current_schema",
    "current_schema()",
    "current_schemas(true)",
    "current_user",
    "inet_client_addr()",
    "inet_client_port()",
    "inet_server_addr()",
    "inet_server_port()",
    "pg_backend_pid()",
    "pg_blocking_pids(1)",
    "pg_conf_load_time()",
    "pg_current_logfile()",
    "pg_my_temp_schema()",
    "pg_is_other_temp_schema(1)",
    "pg_jit_available()",
    "pg_listening_channels()",
    "pg_notification_queue_usage()",
    "pg_postmaster_start_time()",
    "pg_safe_snapshot_blocking_pids(1)",
    "pg_trigger_depth()",
    "session_user",
    "system_user",
    "user",
    "version()",
    "has_any_column_privilege('users', 'select')",
    "has_column_privilege('users', 'ssn', 'select')",
    "has_database_privilege('test', 'connect')",
    "has_foreign_data_wrapper_privilege('x', 'usage')",
    "has_function_privilege('now()', 'execute')",
    "has_language_privilege('sql', 'usage')",
    "has_parameter_privilege('work_mem', 'set')",
    "has_schema_privilege('public', 'usage')",
    "has_sequence_privilege('s', 'usage')",
    "has_server_privilege('x', 'usage')",
    "has_table_privilege('users', 'select')",
    "has_tablespace_privilege('pg_default', 'create')",
    "has_type_privilege('int4', 'usage')",
    "pg_has_role('postgres', 'member')",
    "row_security_active('users')",
    "acldefault('r', 10)",
    "aclexplode(NULL)",
    "makeaclitem(10, 10, 'select', false)",
    "pg_collation_is_visible(1)",
    "pg_conversion_is_visible(1)",
    "pg_function_is_visible(1)",
    "pg_opclass_is_visible(1)",
    "pg_operator_is_visible(1)",
    "pg_opfamily_is_visible(1)",
    "pg_statistics_obj_is_visible(1)",
    "pg_table_is_visible(1)",
    "pg_ts_config_is_visible(1)",
    "pg_ts_dict_is_visible(1)",
    "pg_ts_parser_is_visible(1)",
    "pg_ts_template_is_visible(1)",
    "pg_type_is_visible(1)",
    "format_type(23, NULL)",
    "pg_char_to_encoding('UTF8')",
    "pg_encoding_to_char(6)",
    "pg_get_catalog_foreign_keys()",
    "pg_get_constraintdef(1)",
    "pg_get_expr('x', 1)",
    "pg_get_functiondef(1)",
    "pg_get_function_arguments(1)",
    "pg_get_function_identity_arguments(1)",
    "pg_get_function_result(1)",
    "pg_get_indexdef(1)",
    "pg_get_keywords()",
    "pg_get_ruledef(1)",
    "pg_get_serial_sequence('users', 'id')",
    "pg_get_statisticsobjdef(1)",
    "pg_get_triggerdef(1)",
    "pg_get_userbyid(10)",
    "pg_get_viewdef('users')",
    "pg_index_column_has_property(1, 1, 'asc')",
    "pg_index_has_property(1, 'clusterable')",
    "pg_indexam_has_property(1, 'can_order')",
    "pg_options_to_table(NULL)",
    "pg_settings_get_flags('work_mem')",
    "pg_tablespace_databases(1)",
    "pg_tablespace_location(1)",
    "pg_typeof(1)",
    "collation_for('x')",
    "to_regclass('users')",
    "to_regcollation('C')",
    "to_regnamespace('public')",
    "to_regoper('+')",
    "to_regoperator('+(int,int)')",
    "to_regproc('now')",
    "to_regprocedure('now()')",
    "to_regrole('postgres')",
    "to_regtype('int')",
    "pg_describe_object(1, 1, 0)",
    "pg_identify_object(1, 1, 0)",
    "pg_identify_object_as_address(1, 1, 0)",
    "pg_get_object_address('table', '{users}', '{}')",
    "col_description(1, 1)",
    "obj_description(1, 'pg_class')",
    "shobj_description(1, 'pg_database')",
    "pg_current_xact_id()",
    "pg_current_xact_id_if_assigned()",
    "pg_xact_status('1')",
    "pg_current_snapshot()",
    "pg_snapshot_xip(NULL)",
    "pg_snapshot_xmax(NULL)",
    "pg_snapshot_xmin(NULL)",
    "pg_visible_in_snapshot(NULL, NULL)",
    "txid_current()",
    "txid_current_if_assigned()",
    "txid_current_snapshot()",
    "txid_snapshot_xip(NULL)",
    "txid_snapshot_xmax(NULL)",
    "txid_snapshot_xmin(NULL)",
    "txid_visible_in_snapshot(1, NULL)",
    "txid_status(1)",
    "pg_xact_commit_timestamp('1')",
    "pg_last_committed_xact()",
    "mxid_age('1')",
    "pg_control_checkpoint()",
    "pg_control_system()",
    "pg_control_init()",
    "pg_control_recovery()",
    "pg_stat_get_activity(NULL)",
    "pg_stat_reset()",
)

# Configuration, signalling, backup and WAL, replication, sizes, files, locks, sleep, large
# objects, sequences, dblink, notifications.
PG_ADMINISTRATION = (
    "current_setting('data_directory')",
    "set_config('work_mem', '1GB', false)",
    "pg_cancel_backend(1)",
    "pg_log_backend_memory_contexts(1)",
    "pg_reload_conf()",
    "pg_rotate_logfile()",
    "pg_terminate_backend(1)",
    "pg_create_restore_point('x')",
    "pg_current_wal_flush_lsn()",
    "pg_current_wal_insert_lsn()",
    "pg_current_wal_lsn()",
    "pg_backup_start('x')",
    "pg_backup_stop()",
    "pg_switch_wal()",
    "pg_walfile_name('0/0')",
    "pg_walfile_name_offset('0/0')",
    "pg_wal_lsn_diff('0/0', '0/0')",
    "pg_is_in_recovery()",
    "pg_last_wal_receive_lsn()",
    "pg_last_wal_replay_lsn()",
    "pg_last_xact_replay_timestamp()",
    "pg_is_wal_replay_paused()",
    "pg_get_wal_replay_pause_state()",
    "pg_promote()",
    "pg_wal_replay_pause()",
    "pg_wal_replay_resume()",
    "pg_export_snapshot()",
    "pg_log_standby_snapshot()",
    "pg_create_physical_replication_slot('x')",
    "pg_drop_replication_slot('x')",
    "pg_create_logical_replication_slot('x', 'pgoutput')",
    "pg_copy_physical_replication_slot('x', 'y')",
    "pg_logical_slot_get_changes('x', NULL, NULL)",
    "pg_logical_slot_peek_changes('x', NULL, NULL)",
    "pg_replication_origin_create('x')",
    "pg_column_size(1)",
    "pg_column_compression('x')",
    "pg_database_size('test')",
    "pg_indexes_size('users')",
    "pg_relation_size('users')",
    "pg_size_bytes('1 MB')",
    "pg_size_pretty(1)",
    "pg_table_size('users')",
    "pg_tablespace_size('pg_default')",
    "pg_total_relation_size('users')",
    "pg_relation_filenode('users')",
    "pg_relation_filepath('users')",
    "pg_filenode_relation(0, 1)",
    "pg_collation_actual_version(1)",
    "pg_import_system_collations('public')",
    "brin_summarize_new_values('x')",
    "gin_clean_pending_list('x')",
    "pg_ls_dir('.')",
    "pg_ls_logdir()",
    "pg_ls_waldir()",
    "pg_ls_tmpdir()",
    "pg_ls_archive_statusdir()",
    "pg_read_file('/etc/passwd')",
    "pg_read_binary_file('/etc/passwd')",
    "pg_stat_file('/etc/passwd')",
    "pg_advisory_lock(1)",
    "pg_advisory_lock_shared(1)",
    "pg_advisory_unlock(1)",
    "pg_advisory_unlock_all()",
    "pg_advisory_xact_lock(1)",
    "pg_try_advisory_lock(1)",
    "pg_try_advisory_xact_lock(1)",
    "pg_sleep(10)",
    "pg_sleep_for('1 minute')",
    "pg_sleep_until('tomorrow')",
    "lo_import('/etc/passwd')",
    "lo_export(1, '/tmp/x')",
    "lo_get(1)",
    "lo_put(1, 0, 'x')",
    "lo_from_bytea(0, 'x')",
    "lo_create(0)",
    "lo_unlink(1)",
    "dblink('host=x', 'select 1')",
    "dblink_exec('host=x', 'delete from orders')",
    "dblink_connect('host=x')",
    "nextval('s')",
    "currval('s')",
    "setval('s', 1)",
    "lastval()",
    "pg_notify('c', 'x')",
    "exec('select 1')",
    "exec($s)",
)

PG_XML = (
    "xmlcomment('x')",
    "xmlconcat('<a/>', '<b/>')",
    "xmlelement(name x, id)",
    "xmlforest(id, status)",
    "xmlpi(name php, 'x')",
    "xmlroot('<a/>', version '1.0')",
    "xmlagg(id)",
    "xmlexists('//a' PASSING '<a/>')",
    "xml_is_well_formed('<a/>')",
    "xml_is_well_formed_document('<a/>')",
    "xml_is_well_formed_content('<a/>')",
    "xpath('/a', '<a/>')",
    "xpath_exists('/a', '<a/>')",
    "xmlparse(document '<a/>')",
    "xmlserialize(content '<a/>' AS text)",
    "xmltext('x')",
    "table_to_xml('users', true, false, '')",
    "table_to_xmlschema('users', true, false, '')",
    "table_to_xml_and_xmlschema('users', true, false, '')",
    "query_to_xml('select ssn from users', true, false, '')",
    "query_to_xmlschema('select ssn from users', true, false, '')",
    "query_to_xml_and_xmlschema('select ssn from users', true, false, '')",
    "cursor_to_xml('c', 10, true, false, '')",
    "cursor_to_xmlschema('c', true, false, '')",
    "schema_to_xml('public', true, false, '')",
    "schema_to_xmlschema('public', true, false, '')",
    "schema_to_xml_and_xmlschema('public', true, false, '')",
    "database_to_xml(true, false, '')",
    "database_to_xmlschema(true, false, '')",
    "database_to_xml_and_xmlschema(true, false, '')",
)

PG_JSON = (
    "to_json(id)",
    "to_jsonb(id)",
    "array_to_json(ARRAY[1])",
    "row_to_json(row(id))",
    "json_build_array(id)",
    "jsonb_build_array(id)",
    "json_build_object('a', id)",
    "jsonb_build_object('a', id)",
    "json_object('{a,b}')",
    "jsonb_object('{a,b}')",
    "json_array_elements('[1]')",
    "jsonb_array_elements('[1]')",
    "json_array_elements_text('[1]')",
    "json_array_length('[1]')",
    "jsonb_array_length('[1]')",
    "json_each('{}')",
    "jsonb_each('{}')",
    "json_each_text('{}')",
    "json_extract_path('{}', 'a')",
    "jsonb_extract_path('{}', 'a')",
    "json_extract_path_text('{}', 'a')",
    "json_object_keys('{}')",
    "jsonb_object_keys('{}')",
    "json_populate_record(NULL, '{}')",
    "jsonb_populate_record(NULL, '{}')",
    "json_populate_recordset(NULL, '[]')",
    "json_to_record('{}')",
    "json_to_recordset('[]')",
    "jsonb_to_recordset('[]')",
    "json_strip_nulls('{}')",
    "jsonb_strip_nulls('{}')",
    "jsonb_set('{}', '{a}', '1')",
    "jsonb_insert('{}', '{a}', '1')",
    "jsonb_pretty('{}')",
    "jsonb_path_query('{}', '$')",
    "jsonb_path_exists('{}', '$')",
    "jsonb_path_match('{}', '$')",
    "jsonb_path_query_array('{}', '$')",
    "jsonb_path_query_first('{}', '$')",
    "json_typeof('{}')",
    "jsonb_typeof('{}')",
    "json_agg(id)",
    "jsonb_agg(id)",
    "json_object_agg(id, status)",
    "jsonb_object_agg(id, status)",
)

# Table-valued and amplifying functions that have no place in an analyst's SELECT.
PG_OTHER = (
    "generate_series(1, 1000000000)",
    "generate_subscripts(ARRAY[1], 1)",
    "unnest(ARRAY[1])",
    "regexp_split_to_table('a b', ' ')",
    "string_to_table('a b', ' ')",
    "repeat('x', 100000000)",
    "lpad('x', 100000000)",
    "rpad('x', 100000000)",
    "format('%s', id)",
    "quote_ident('x')",
    "quote_literal('x')",
    "md5('x')",
    "encode('x', 'hex')",
    "decode('x', 'hex')",
    "convert_from('x', 'UTF8')",
    "gen_random_uuid()",
)

PG_CASTS = (
    "'users'::regclass",
    "CAST('users' AS regclass)",
    "regclass 'users'",
    "'users'::regclass::oid",
    "id::oid",
    "CAST(id AS oid)",
    "'now'::regproc",
    "'int4'::regtype",
    "'postgres'::regrole",
    "'public'::regnamespace",
    "'+'::regoper",
    "'C'::regcollation",
    "'english'::regconfig",
    "'simple'::regdictionary",
    "'now()'::regprocedure",
    "'+(int,int)'::regoperator",
    "status::name",
    "status::xml",
    "id::xid",
    "id::cid",
    "id::tid",
    "status::pg_lsn",
    "status::txid_snapshot",
    "status::some_user_type",
)

SQLITE_CORE = (
    "changes()",
    "last_insert_rowid()",
    "total_changes()",
    "load_extension('x')",
    "load_extension('x', 'y')",
    "sqlite_compileoption_get(1)",
    "sqlite_compileoption_used('THREADSAFE')",
    "sqlite_offset(id)",
    "sqlite_source_id()",
    "sqlite_version()",
    "printf('%.*c', 100000000, 'x')",
    "format('%.*c', 100000000, 'x')",
    "randomblob(100000000)",
    "zeroblob(100000000)",
    "quote(status)",
    "hex(status)",
    "unhex('00')",
    "soundex(status)",
    "char(65)",
    "likelihood(id, 0.5)",
    "unlikely(id)",
    "likely(id)",
    "fts3_tokenizer('simple')",
    "readfile('/etc/passwd')",
    "writefile('/tmp/x', 'y')",
    "edit('x')",
)

SQLITE_JSON = (
    "json('{}')",
    "jsonb('{}')",
    "json_array(id)",
    "jsonb_array(id)",
    "json_array_length('[]')",
    "json_error_position('{')",
    "json_extract('{}', '$.a')",
    "jsonb_extract('{}', '$.a')",
    "json_insert('{}', '$.a', 1)",
    "json_object('a', id)",
    "jsonb_object('a', id)",
    "json_patch('{}', '{}')",
    "json_pretty('{}')",
    "json_remove('{}', '$.a')",
    "json_replace('{}', '$.a', 1)",
    "json_set('{}', '$.a', 1)",
    "json_type('{}')",
    "json_valid('{}')",
    "json_quote(status)",
    "json_group_array(id)",
    "json_group_object(id, status)",
    "json_each('[1]')",
    "json_tree('[1]')",
)

# Every pragma that has a table-valued form (pragma_NAME), plus other table-valued functions.
SQLITE_TABLE_FUNCTIONS = (
    "pragma_table_info('users')",
    "pragma_table_xinfo('users')",
    "pragma_table_list()",
    "pragma_index_list('users')",
    "pragma_index_info('i')",
    "pragma_index_xinfo('i')",
    "pragma_foreign_key_list('users')",
    "pragma_foreign_key_check()",
    "pragma_collation_list()",
    "pragma_database_list()",
    "pragma_function_list()",
    "pragma_module_list()",
    "pragma_pragma_list()",
    "pragma_compile_options()",
    "pragma_integrity_check()",
    "pragma_quick_check()",
    "pragma_page_count()",
    "pragma_page_size()",
    "pragma_freelist_count()",
    "pragma_journal_mode()",
    "pragma_synchronous()",
    "pragma_user_version()",
    "pragma_schema_version()",
    "pragma_data_version()",
    "pragma_application_id()",
    "pragma_encoding()",
    "pragma_foreign_keys()",
    "pragma_recursive_triggers()",
    "pragma_temp_store()",
    "pragma_cache_size()",
    "pragma_busy_timeout()",
    "pragma_max_page_count()",
    "json_each('[1]')",
    "json_tree('[1]')",
    "generate_series(1, 1000000000)",
    "dbstat()",
    "carray(1, 10)",
    "sqlite_dbpage()",
    "sqlite_stmt()",
)

PG_CALLS = PG_SYSTEM_INFORMATION + PG_ADMINISTRATION + PG_XML + PG_JSON + PG_OTHER
SQLITE_CALLS = SQLITE_CORE + SQLITE_JSON + SQLITE_TABLE_FUNCTIONS

# Analyst queries over users(id, name, created_at) and orders(id, user_id, status, total,
# created_at) that must keep passing under the default allow-list.
PG_BENIGN = (
    "SELECT status, count(*) FROM orders GROUP BY status",
    "SELECT u.name, sum(o.total) AS spent FROM users u JOIN orders o ON o.user_id = u.id "
    "GROUP BY u.name HAVING sum(o.total) > 10 ORDER BY spent DESC",
    "SELECT date_trunc('month', created_at) AS m, count(*) FROM orders GROUP BY 1 ORDER BY 1",
    "SELECT coalesce(status, 'none'), nullif(total, 0) FROM orders",
    "SELECT id, row_number() OVER (PARTITION BY status ORDER BY total DESC) FROM orders",
    "SELECT count(DISTINCT user_id) FROM orders",
    "WITH big AS (SELECT user_id, sum(total) AS s FROM orders GROUP BY user_id) "
    "SELECT u.name, b.s FROM big b JOIN users u ON u.id = b.user_id",
    "SELECT extract(year FROM created_at), extract(epoch FROM created_at) FROM orders",
    "SELECT now(), current_date, current_timestamp, localtimestamp FROM orders",
    "SELECT lower(name) || ' ' || upper(name), length(name), substr(name, 1, 3), "
    "substring(name from 1 for 2), trim(name), replace(name, 'a', 'b'), concat(name, id) "
    "FROM users",
    "SELECT round(total, 2), abs(total), ceil(total), floor(total), total % 3, total * 2 + 1 "
    "FROM orders",
    "SELECT CASE WHEN total > 100 THEN 'big' WHEN total > 10 THEN 'mid' ELSE 'small' END "
    "FROM orders",
    "SELECT id FROM orders WHERE status IN ('open', 'closed') AND total BETWEEN 1 AND 1000 "
    "AND status LIKE 'o%' AND status ILIKE 'O%' AND status NOT LIKE 'x%'",
    "SELECT CAST(total AS int), total::numeric(10, 2), id::text, created_at::date FROM orders",
    "SELECT id FROM orders WHERE created_at > now() - interval '7 days'",
    "SELECT string_agg(status, ',' ORDER BY id), array_agg(id), avg(total), stddev(total), "
    "min(total), max(total) FROM orders",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders",
    "SELECT count(*) FILTER (WHERE status = 'open') FROM orders",
    "SELECT id, lag(total) OVER w, lead(total) OVER w, rank() OVER w, dense_rank() OVER w, "
    "first_value(total) OVER w FROM orders WINDOW w AS (ORDER BY id)",
    "SELECT to_char(created_at, 'YYYY-MM'), age(created_at), date_part('year', created_at) "
    "FROM orders",
    "SELECT greatest(total, 1), least(total, 1) FROM orders",
    "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id)",
    "SELECT o.id, x.c FROM orders o CROSS JOIN LATERAL "
    "(SELECT count(*) AS c FROM users u WHERE u.id = o.user_id) x",
    "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(n, s)",
    "SELECT created_at AT TIME ZONE 'UTC' FROM orders",
    "SELECT id FROM orders WHERE status IS NOT NULL AND NOT (total < 0) "
    "AND status IS DISTINCT FROM 'x'",
    "SELECT left(name, 2), right(name, 2), position('a' in name), split_part(name, ' ', 1), "
    "initcap(name) FROM users",
    "SELECT id FROM orders WHERE status ~ '^o'",
    "SELECT bool_and(total > 0), bool_or(total > 0) FROM orders",
    "SELECT trunc(total), mod(id, 2), power(total, 2), sqrt(total), sign(total), "
    "ln(total + 1), log(total + 1), exp(1) FROM orders",
    "SELECT id FROM orders UNION ALL SELECT id FROM users",
    "SELECT DATE '2024-01-01', TIMESTAMP '2024-01-01 00:00:00' FROM orders",
    "SELECT ntile(4) OVER (ORDER BY total), percent_rank() OVER (ORDER BY total), "
    "cume_dist() OVER (ORDER BY total) FROM orders",
    "SELECT id FROM orders WHERE total > (SELECT avg(total) FROM orders)",
    "SELECT to_date('2024-01-01', 'YYYY-MM-DD'), to_timestamp(0), make_date(2024, 1, 1) "
    "FROM orders",
    "SELECT concat_ws('-', id, status), regexp_replace(status, 'o', '0') FROM orders",
    "SELECT trim(both ' ' from status), ltrim(status), rtrim(status), btrim(status) FROM orders",
    "SELECT date_trunc('day', created_at)::date, count(*) FROM orders GROUP BY 1",
    "SELECT id FROM orders ORDER BY total DESC NULLS LAST LIMIT 5 OFFSET 2",
    "SELECT variance(total), var_samp(total), corr(total, id), "
    "mode() WITHIN GROUP (ORDER BY status) FROM orders",
    "SELECT char_length(status), upper(status) FROM orders",
    "SELECT id, sum(total) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) "
    "FROM orders",
    "SELECT status, count(*) FROM orders GROUP BY ROLLUP (status)",
    "SELECT id FROM orders WHERE user_id = ANY(ARRAY[1, 2])",
    "SELECT id FROM orders WHERE (user_id, status) IN (SELECT id, name FROM users)",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) "
    "SELECT sum(n) FROM r",
    "SELECT o.id, u.name FROM orders o LEFT JOIN users u USING (id) WHERE u.name IS NULL",
)

SQLITE_BENIGN = (
    "SELECT status, count(*) FROM orders GROUP BY status",
    "SELECT strftime('%Y-%m', created_at), count(*) FROM orders GROUP BY 1",
    "SELECT date(created_at), datetime(created_at), julianday(created_at), time(created_at), "
    "unixepoch(created_at) FROM orders",
    "SELECT ifnull(status, 'x'), iif(total > 1, 'a', 'b'), instr(status, 'o'), "
    "substr(status, 1, 2), total(total), group_concat(status, ',') FROM orders",
    "SELECT id, row_number() OVER (ORDER BY total) FROM orders",
    "SELECT CAST(total AS integer), CAST(id AS text), CAST(total AS real) FROM orders",
    "SELECT max(total, 1), min(total, 1), round(total, 1), abs(total) FROM orders",
    "SELECT status || '-' || id, typeof(total), status GLOB 'o*', status LIKE 'o%' FROM orders",
    "WITH x AS (SELECT user_id, count(*) AS c FROM orders GROUP BY 1) SELECT * FROM x",
    "SELECT current_date, current_timestamp FROM orders",
    "SELECT coalesce(status, 'n'), nullif(total, 0), length(status), lower(status), "
    "upper(status), trim(status), replace(status, 'a', 'b') FROM orders",
    "SELECT u.name, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id "
    "GROUP BY u.name ORDER BY 2 DESC",
    "SELECT CASE WHEN total > 10 THEN 'big' ELSE 'small' END, count(*) FROM orders GROUP BY 1",
    "SELECT id FROM orders WHERE total BETWEEN 1 AND 100 AND status IN ('open', 'shipped')",
    "SELECT id, lag(total) OVER (ORDER BY id), sum(total) OVER (PARTITION BY user_id) FROM orders",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) "
    "SELECT sum(n) FROM r",
)


# --- the catalogues against the default policy ----------------------------------------------

POLICY = SqlPolicy(
    roles={
        "analyst": {
            "users": ["id", "name", "created_at"],
            "orders": "*",
        }
    }
)
SQLITE = SqlPolicy(roles=POLICY.roles, dialect="sqlite")
ANALYST = ("analyst",)


def _names(call: str) -> str:
    """The function's name as the catalogue writes it (for matching refusal reasons)."""
    return call.split("(", 1)[0].split("::")[-1].strip().lower()


def _refused(sql: str, policy: SqlPolicy) -> tuple[str, ...]:
    verdict = validate_sql(sql, policy, ANALYST)
    assert not verdict.ok, f"accepted: {verdict.sql}"
    return verdict.reasons


@pytest.mark.parametrize("call", PG_CALLS)
def test_postgres_catalogue_is_refused_in_the_select_list(call: str) -> None:
    reasons = _refused(f"SELECT {call} FROM orders", POLICY)
    assert any(_names(call) in r.lower() for r in reasons) or any("parse" in r for r in reasons), (
        reasons
    )


@pytest.mark.parametrize("call", PG_CALLS)
def test_postgres_catalogue_is_refused_in_where_and_subqueries(call: str) -> None:
    _refused(f"SELECT id FROM orders WHERE ({call}) IS NOT NULL", POLICY)
    _refused(f"SELECT id FROM orders WHERE id IN (SELECT {call} FROM orders)", POLICY)


@pytest.mark.parametrize(
    "call",
    [c for c in PG_CALLS if "(" in c] + list(SQLITE_TABLE_FUNCTIONS),
)
def test_table_valued_use_in_from_is_refused(call: str) -> None:
    for policy in (POLICY, SQLITE):
        _refused(f"SELECT * FROM {call}", policy)
        _refused(f"SELECT o.id FROM orders o, {call} AS f", policy)
        _refused(f"SELECT o.id FROM orders o CROSS JOIN LATERAL {call} AS f", policy)


@pytest.mark.parametrize("cast", PG_CASTS)
def test_postgres_casts_to_catalogue_types_are_refused(cast: str) -> None:
    reasons = _refused(f"SELECT {cast} FROM orders", POLICY)
    assert any("type" in r for r in reasons), reasons


@pytest.mark.parametrize("call", SQLITE_CALLS)
def test_sqlite_catalogue_is_refused(call: str) -> None:
    reasons = _refused(f"SELECT {call} FROM orders", SQLITE)
    assert any(_names(call) in r.lower() for r in reasons), reasons
    _refused(f"SELECT id FROM orders WHERE {call} IS NOT NULL", SQLITE)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM pragma_table_info",
        "SELECT name FROM pragma_function_list",
        "PRAGMA table_info(users)",
        "PRAGMA query_only = OFF",
        "SELECT name FROM sqlite_master",
        "SELECT sql FROM sqlite_schema",
    ],
)
def test_sqlite_pragmas_and_schema_tables_are_refused(sql: str) -> None:
    _refused(sql, SQLITE)


def test_no_catalogue_name_is_on_a_default_allow_list() -> None:
    for calls, dialect in ((PG_CALLS, "postgres"), (SQLITE_CALLS, "sqlite")):
        allowed = default_functions(dialect)
        assert not {_names(c) for c in calls} & allowed


@pytest.mark.parametrize("sql", PG_BENIGN)
def test_postgres_analyst_queries_pass(sql: str) -> None:
    verdict = validate_sql(sql, POLICY, ANALYST)
    assert verdict.ok, verdict.reasons


@pytest.mark.parametrize("sql", SQLITE_BENIGN)
def test_sqlite_analyst_queries_pass(sql: str) -> None:
    verdict = validate_sql(sql, SQLITE, ANALYST)
    assert verdict.ok, verdict.reasons
