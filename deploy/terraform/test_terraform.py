"""Checks the Terraform against the code, without Terraform or an AWS account.

Run by scripts/terraform-check.sh (with python-hcl2 installed, and the path
of a built shopstream binary in SHOPSTREAM_BIN):

- the DynamoDB tables, the stream and the images bucket are the ones
  `shopstream init --plan` says `init` creates (names, keys, TTL);
- every AWS SDK call in the Rust sources is listed in deploy/iam-actions.json,
  every listed call is still made, and the task role grants exactly the
  actions the list gives the serving binary (plus the KMS and collector
  actions), never `*` as an action;
- the service's environment is settings the binary accepts;
- the rest of what docs/deploy-aws.md promises is there (two zones,
  /readyz, websocket idle timeout, WAF rules, alarms, Cognito groups).
"""

import glob
import json
import os
import re
import subprocess
import unittest

import hcl2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def unq(v):
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    return v


def load(folder):
    merged = {"resource": {}, "data": {}, "variable": {}, "locals": {}, "module": {}}
    for path in sorted(glob.glob(os.path.join(folder, "*.tf"))):
        with open(path) as f:
            doc = hcl2.load(f)
        for block in doc.get("resource", []) + doc.get("data", []):
            kind = "resource" if block in doc.get("resource", []) else "data"
            for rtype, named in block.items():
                for name, body in named.items():
                    merged[kind][(unq(rtype), unq(name))] = body
        for v in doc.get("variable", []):
            for name, body in v.items():
                merged["variable"][unq(name)] = body
        for loc in doc.get("locals", []):
            merged["locals"].update({k: v for k, v in loc.items() if k != "__is_block__"})
        for m in doc.get("module", []):
            for name, body in m.items():
                merged["module"][unq(name)] = body
    return merged


TF = load(HERE)


def default(var):
    """A variable's default (`None`: it has none, the operator sets it)."""
    return unq(TF["variable"][var].get("default"))


def resource(rtype, name):
    return TF["resource"][(rtype, name)]


def block(body, key):
    """The one nested block `key` of a resource."""
    (b,) = body[key]
    return b


def shopstream(*args, env=None):
    binary = os.environ.get("SHOPSTREAM_BIN", os.path.join(ROOT, "target", "debug", "shopstream"))
    full = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    full.update(env or {})
    out = subprocess.run([binary, *args], env=full, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"shopstream {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def plan(env=None):
    base = {
        "SHOPSTREAM_TABLE_PREFIX": default("table_prefix"),
        "SHOPSTREAM_STREAM": "kinesis",
        "SHOPSTREAM_KINESIS_STREAM": default("kinesis_stream_name"),
        "SHOPSTREAM_IMAGES_BUCKET": "images-bucket",
    }
    base.update(env or {})
    return json.loads(shopstream("init", "--plan", env=base))


class TablesStreamBucket(unittest.TestCase):
    def test_the_tables_are_the_ones_init_creates(self):
        tables = TF["locals"]["tables"]
        table = resource("aws_dynamodb_table", "tables")
        self.assertEqual(table["for_each"], "${local.tables}")
        self.assertEqual(unq(table["name"]), "${var.table_prefix}${each.key}")
        prefix = default("table_prefix")
        wanted = {t["name"]: t for t in plan()["tables"]}
        got = {prefix + name: unq(ttl) for name, ttl in tables.items()}
        self.assertEqual(set(got), set(wanted), "table names differ from `shopstream init --plan`")
        for name, ttl in got.items():
            self.assertEqual(ttl, wanted[name]["ttl_attribute"], f"TTL attribute of {name}")
        for t in wanted.values():
            self.assertEqual(unq(table["hash_key"]), t["hash_key"])
            self.assertEqual(unq(table["range_key"]), t["range_key"])
            self.assertEqual(unq(table["billing_mode"]), t["billing_mode"])
        attrs = {unq(a["name"]): unq(a["type"]) for a in table["attribute"]}
        self.assertEqual(attrs, {"pk": "S", "sk": "S"})
        self.assertIs(block(table, "point_in_time_recovery")["enabled"], True)
        sse = block(table, "server_side_encryption")
        self.assertIs(sse["enabled"], True)
        self.assertEqual(sse["kms_key_arn"], "${aws_kms_key.main.arn}")
        (ttl,) = table["dynamic"]
        content = block(ttl['"ttl"'], "content")
        self.assertEqual(content["attribute_name"], "${ttl.value}")

    def test_the_prefix_is_the_services(self):
        # A different prefix moves every name the same way on both sides.
        names = {t["name"] for t in plan({"SHOPSTREAM_TABLE_PREFIX": "other_"})["tables"]}
        self.assertEqual(names, {"other_" + n for n in TF["locals"]["tables"]})

    def test_the_stream_is_the_one_the_service_reads(self):
        stream = resource("aws_kinesis_stream", "events")
        self.assertEqual(unq(stream["name"]), "${var.kinesis_stream_name}")
        self.assertEqual(plan()["kinesis_stream"], default("kinesis_stream_name"))
        self.assertEqual(unq(block(stream, "stream_mode_details")["stream_mode"]), "ON_DEMAND")
        self.assertEqual(unq(stream["encryption_type"]), "KMS")
        env = TF["locals"]["environment"]
        self.assertEqual(env["SHOPSTREAM_KINESIS_STREAM"], "${aws_kinesis_stream.events.name}")
        self.assertEqual(unq(env["SHOPSTREAM_STREAM"]), "kinesis")
        self.assertEqual(unq(env["SHOPSTREAM_BACKEND"]), "aws")
        self.assertEqual(env["SHOPSTREAM_TABLE_PREFIX"], "${var.table_prefix}")

    def test_the_bucket_is_private_encrypted_and_versioned(self):
        self.assertEqual(plan()["images_bucket"], "images-bucket")
        env = TF["locals"]["environment"]
        self.assertEqual(env["SHOPSTREAM_IMAGES_BUCKET"], "${aws_s3_bucket.images.bucket}")
        pab = resource("aws_s3_bucket_public_access_block", "images")
        for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
            self.assertIs(pab[k], True, k)
        versioning = block(resource("aws_s3_bucket_versioning", "images"), "versioning_configuration")
        self.assertEqual(unq(versioning["status"]), "Enabled")
        sse = resource("aws_s3_bucket_server_side_encryption_configuration", "images")
        rule = block(block(sse, "rule"), "apply_server_side_encryption_by_default")
        self.assertEqual(unq(rule["sse_algorithm"]), "aws:kms")


def iam_list():
    with open(os.path.join(ROOT, "deploy", "iam-actions.json")) as f:
        return json.load(f)


SDK_CALL = re.compile(r"\bclient\s*\.\s*([a-z_][a-z0-9_]*)\s*\(\s*\)")
NOT_SDK = {"clone", "config"}


def sdk_calls():
    """(crate, method) of every AWS SDK client call in the Rust sources."""
    found = {}
    listed = iam_list()["calls"]
    for path in glob.glob(os.path.join(ROOT, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, ROOT)
        if rel.startswith("target") or "/tests/" in rel or rel.startswith("tests/") or "/examples/" in rel:
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        crates = sorted(set(re.findall(r"\b(aws_sdk_[a-z0-9]+)\b", text)))
        if not crates:
            continue
        for m in SDK_CALL.finditer(text):
            method = m.group(1)
            if method in NOT_SDK:
                continue
            owners = [c for c in crates if method in listed.get(c, {})]
            if len(owners) != 1:
                raise AssertionError(
                    f"{rel}: `client.{method}()` is an AWS SDK call of {crates} that "
                    f"deploy/iam-actions.json does not list (or lists twice): add it with its IAM actions"
                )
            found.setdefault((owners[0], method), set()).add(rel)
    return found, listed


def statements(doc_name):
    doc = TF["data"][("aws_iam_policy_document", doc_name)]
    out = []
    for st in doc["statement"]:
        actions = [unq(a) for a in st["actions"]]
        resources = st["resources"]
        resources = [unq(r) for r in resources] if isinstance(resources, list) else [resources]
        out.append((unq(st.get("sid", "")), actions, resources))
    return out


class Iam(unittest.TestCase):
    def test_the_list_is_every_sdk_call_the_code_makes(self):
        found, listed = sdk_calls()
        declared = {(c, m) for c, calls in listed.items() for m in calls}
        self.assertTrue(found, "no SDK calls found: the scan is broken")
        self.assertEqual(set(found), declared, "deploy/iam-actions.json and the code differ")

    def test_the_task_role_grants_exactly_the_serving_actions(self):
        _, listed = sdk_calls()
        file = iam_list()
        serving = {a for calls in listed.values() for v in calls.values() if v != "init" for a in v}
        wanted = serving | set(file["implied"]) | set(file["collector"])
        granted = set()
        for sid, actions, resources in statements("task"):
            for a in actions:
                self.assertNotIn("*", a, f"{sid}: wildcard action {a}")
            granted.update(actions)
            if resources == ["*"]:
                self.assertTrue(
                    all(a.startswith("xray:") for a in actions),
                    f"{sid}: `*` resource for actions that support resource ARNs",
                )
        self.assertEqual(granted, wanted)
        init_only = {m for calls in listed.values() for m, v in calls.items() if v == "init"}
        self.assertIn("create_table", init_only, "the Terraform creates the tables, not the task")

    def test_each_statement_names_its_resources(self):
        by_sid = {sid: resources for sid, _, resources in statements("task")}
        self.assertEqual(by_sid["Tables"], ["${local.table_arns}"])
        self.assertEqual(by_sid["Stream"], ["${aws_kinesis_stream.events.arn}"])
        self.assertEqual(by_sid["Images"], ["${aws_s3_bucket.images.arn}/*"])
        self.assertEqual(by_sid["Key"], ["${aws_kms_key.main.arn}"])


def resolve(value):
    """The value Terraform would give a local.environment entry, for the few
    forms it uses (a variable, tostring of a variable, minus a number)."""
    v = unq(value)
    m = re.fullmatch(r"\$\{var\.(\w+)\}", v)
    if m:
        d = default(m.group(1))
        return None if d is None else str(d)
    m = re.fullmatch(r"\$\{tostring\(var\.(\w+)(?: - (\d+))?\)\}", v)
    if m:
        n = default(m.group(1))
        return str(n - int(m.group(2) or 0))
    if "${" in v:
        return None
    return v


STAND_INS = {
    "SHOPSTREAM_KINESIS_STREAM": "shopstream-events",
    "SHOPSTREAM_IMAGES_BUCKET": "images-bucket",
    "SHOPSTREAM_SUPPLIER_SNS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:shopstream-supplier-alerts",
    "SHOPSTREAM_JWKS_URL": "https://cognito-idp.eu-west-1.amazonaws.com/pool/.well-known/jwks.json",
    "SHOPSTREAM_JWKS_ISSUER": "https://cognito-idp.eu-west-1.amazonaws.com/pool",
    "SHOPSTREAM_JWKS_AUDIENCE": "client-id",
    "SHOPSTREAM_SES_FROM": "shop@example.com",
    "SHOPSTREAM_ADMIN_EMAIL": "admin@example.com",
    "SHOPSTREAM_OIDC_CLIENT_ID": "pages-client-id",
    "SHOPSTREAM_PUBLIC_URL": "https://shop.example.com",
}


class Service(unittest.TestCase):
    def test_the_environment_is_settings_the_binary_accepts(self):
        env = {}
        for k, v in TF["locals"]["environment"].items():
            r = resolve(v)
            env[k] = r if r is not None else STAND_INS[k]
        # The task's secrets, from SSM.
        env["SHOPSTREAM_JWT_SECRET"] = "x" * 40
        env["SHOPSTREAM_ADMIN_PASSWORD"] = "a long admin password"
        env["SHOPSTREAM_OIDC_CLIENT_SECRET"] = "the pages client's secret"
        out = plan(env)
        self.assertEqual(len(out["tables"]), len(TF["locals"]["tables"]))

    def test_an_unknown_setting_is_refused(self):
        # The check above could pass for a binary that ignores the
        # environment: this one must fail.
        with self.assertRaises(AssertionError):
            plan({"SHOPSTREAM_NOT_A_SETTING": "1"})

    def test_tasks_span_zones_behind_https_with_websocket_timeout(self):
        zones = TF["variable"]["availability_zones"]["default"]
        self.assertGreaterEqual(len(zones), 2)
        self.assertEqual(resource("aws_subnet", "private")["count"], "${length(local.azs)}")
        tg = resource("aws_lb_target_group", "shopstream")
        self.assertEqual(unq(block(tg, "health_check")["path"]), "/readyz")
        self.assertGreaterEqual(resource("aws_lb", "main")["idle_timeout"], 300)
        self.assertEqual(unq(resource("aws_lb_listener", "https")["protocol"]), "HTTPS")
        self.assertLessEqual(default("stop_timeout_secs"), 120, "Fargate's stop timeout is at most 120 s")

    def test_waf_has_managed_rules_and_a_rate_rule(self):
        acl = resource("aws_wafv2_web_acl", "main")
        names = {unq(r["name"]) for r in acl["rule"]}
        self.assertTrue({"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= names)
        rate = [r for r in acl["rule"] if "rate_based_statement" in block(r, "statement")]
        self.assertEqual(len(rate), 1)

    def test_alarms_cover_errors_latency_lag_dead_letters_throttles_health(self):
        alarms = {name for (t, name) in TF["resource"] if t == "aws_cloudwatch_metric_alarm"}
        self.assertTrue({"http_5xx", "p99_latency", "iterator_age", "dead_letters", "throttles", "unhealthy"} <= alarms)
        for name in ("http_5xx", "p99_latency", "iterator_age", "dead_letters", "throttles", "unhealthy"):
            self.assertEqual(
                resource("aws_cloudwatch_metric_alarm", name)["alarm_actions"], "${local.alarm_to}"
            )

    def test_the_pages_client_runs_the_code_flow_back_to_the_service(self):
        client = resource("aws_cognito_user_pool_client", "pages")
        self.assertEqual([unq(f) for f in client["allowed_oauth_flows"]], ["code"])
        self.assertTrue({"openid", "email"} <= {unq(s) for s in client["allowed_oauth_scopes"]})
        self.assertIs(client["generate_secret"], True)
        # The route the binary serves (api/src/routes/oidc.rs).
        self.assertEqual([unq(u) for u in client["callback_urls"]], ["${var.public_url}/api/auth/oidc/callback"])
        # The pages' paths (Page::path), where the sign-out comes back to.
        self.assertEqual(
            sorted(unq(u) for u in client["logout_urls"]),
            ["${var.public_url}/", "${var.public_url}/dashboard"],
        )
        with open(os.path.join(ROOT, "api", "src", "routes", "oidc.rs")) as f:
            route = f.read()
        self.assertIn('"/api/auth/oidc/callback"', route)
        env = TF["locals"]["environment"]
        self.assertEqual(unq(env["SHOPSTREAM_OIDC_CLIENT_ID"]), "${aws_cognito_user_pool_client.pages.id}")
        secrets = resource("aws_ecs_task_definition", "shopstream")
        self.assertIn("SHOPSTREAM_OIDC_CLIENT_SECRET", str(secrets["container_definitions"]))

    def test_cognito_has_the_three_roles(self):
        groups = resource("aws_cognito_user_group", "roles")
        self.assertEqual(groups["for_each"], '${toset(["admin", "supplier", "service"])}')


if __name__ == "__main__":
    unittest.main(verbosity=2)
