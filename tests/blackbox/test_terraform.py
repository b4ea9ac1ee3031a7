"""Infrastructure as code: the Terraform module parses, checkov finds nothing in it or in the CloudFormation templates
(or each skip says why, next to its resource), and the module and the templates deploy the same settings.

No server is started and no Terraform binary is needed (none can be installed on the CI machines): python-hcl2 parses
the module, checkov (in .venv-checkov, made by scripts/test) reads both. Everything here runs offline."""
import json
import os
import re
import subprocess
from pathlib import Path

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "deploy" / "terraform"
TEMPLATES = {name: ROOT / "deploy" / "aws" / f"switchboard-{name}.yaml" for name in ("alb", "nlb")}
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))


# --- reading HCL (python-hcl2 keeps the quotes of strings and labels) and CloudFormation YAML (short-form tags) ---

def _clean(value):
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("__"))}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def parse_tf(path: Path) -> dict:
    with path.open() as f:
        return _clean(hcl2.load(f))


class Module:
    """locals, variables and resources of every .tf file directly in deploy/terraform (the module itself)."""

    def __init__(self, directory: Path):
        self.locals, self.variables, self.resources, self.outputs, self.terraform = {}, {}, {}, {}, []
        for path in sorted(directory.glob("*.tf")):
            parsed = parse_tf(path)
            for block in parsed.get("locals", []):
                self.locals.update(block)
            for block in parsed.get("variable", []):
                self.variables.update(block)
            for block in parsed.get("output", []):
                self.outputs.update(block)
            for block in parsed.get("resource", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        self.resources[f"{kind}.{name}"] = body
            self.terraform += parsed.get("terraform", [])

    def default(self, variable: str):
        return self.variables[variable]["default"]

    def resolve(self, value):
        """A literal, `${local.x}` or `${var.x}` (its default), followed until it is a literal."""
        while isinstance(value, str):
            match = re.fullmatch(r"\$\{(local|var)\.([a-z0-9_]+)\}", value)
            if not match:
                break
            value = self.locals[match[2]] if match[1] == "local" else self.default(match[2])
        return value


class CloudFormationLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _tag)


def load_template(name: str) -> dict:
    return yaml.load(TEMPLATES[name].read_text(), Loader=CloudFormationLoader)


def attributes(resource: dict, key: str) -> dict:
    return {a["Key"]: a["Value"] for a in resource["Properties"][key]}


def container_environment(template: dict) -> dict:
    container = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    return {e["Name"]: e["Value"] for e in container["Environment"]}


# --- evaluating what depends on the inputs: Terraform's `a ? b : c` chains and CloudFormation's Conditions ---

def _split_top(expr: str, sep: str) -> list:
    """expr split at `sep` outside quotes, parentheses, brackets and braces."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(expr):
        c = expr[i]
        if c == '"' and (i == 0 or expr[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and c in "([{":
            depth += 1
        elif not quoted and c in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and expr.startswith(sep, i):
            parts.append(expr[start:i])
            start = i = i + len(sep)
            continue
        i += 1
    return parts + [expr[start:]]


def _unwrap(expr: str, opening: str, closing: str) -> str:
    """expr without one pair of outer `opening`...`closing` that enclose all of it."""
    if not (expr.startswith(opening) and expr.endswith(closing)):
        return expr
    depth = 0
    for i, c in enumerate(expr):
        depth += c in "({[" and 1 or 0
        depth -= c in ")}]" and 1 or 0
        if depth == 0 and i < len(expr) - 1 and c in ")}]":
            return expr
    return expr[len(opening):-len(closing)]


def tf_eval(expr, module: Module, inputs: dict):
    """The value of a module expression for these inputs (variables not given take their defaults): enough HCL for
    its Redis choice (?:, ||, &&, !, ==, !=, coalesce, strings with ${...}). Anything else comes back as its text."""
    if not isinstance(expr, str):
        return expr
    expr = _unwrap(_unwrap(expr.strip(), "${", "}").strip(), "(", ")").strip()
    value = lambda e: tf_eval(e, module, inputs)
    question = _split_top(expr, "?")
    if len(question) > 1:
        rest = "?".join(question[1:])
        then, otherwise = _split_top(rest, ":")[0], ":".join(_split_top(rest, ":")[1:])
        return value(then) if value(question[0]) else value(otherwise)
    for operator, combine in (("||", any), ("&&", all)):
        operands = _split_top(expr, operator)
        if len(operands) > 1:
            return combine(value(o) for o in operands)
    for operator, compare in (("==", lambda a, b: a == b), ("!=", lambda a, b: a != b)):
        operands = _split_top(expr, operator)
        if len(operands) == 2:
            return compare(value(operands[0]), value(operands[1]))
    if expr.startswith("!"):
        return not value(expr[1:])
    if expr in ("null", "true", "false") or re.fullmatch(r"\d+", expr):
        return {"null": None, "true": True, "false": False}.get(expr, int(expr) if expr.isdigit() else None)
    if match := re.fullmatch(r"(var|local)\.([a-z0-9_]+)", expr):
        if match[1] == "local":
            return value(module.locals[match[2]])
        return inputs.get(match[2], module.variables[match[2]].get("default"))
    if match := re.fullmatch(r"coalesce\((.*)\)", expr):
        return next((v for v in map(value, _split_top(match[1], ",")) if v is not None), None)
    if len(expr) >= 2 and expr[0] == expr[-1] == '"':
        return re.sub(r"\$\{([^}]*)\}", lambda m: str(value(m[1])), expr[1:-1])
    return expr


def created(module: Module, inputs: dict) -> set:
    """The resources the module creates for these inputs (count evaluated)."""
    return {key for key, body in module.resources.items() if tf_eval(body.get("count", 1), module, inputs) != 0}


_NO_VALUE = object()


class Stack:
    """A template with its parameters set: Conditions decided, Fn::If taken, AWS::NoValue dropped."""

    def __init__(self, template: dict, parameters: dict):
        self.template = template
        self.parameters = {name: p.get("Default") for name, p in template["Parameters"].items()} | parameters

    def condition(self, expression) -> bool:
        if isinstance(expression, str):
            return self.condition(self.template["Conditions"][expression])
        (function, arguments), = expression.items()
        if function == "Fn::Condition":
            return self.condition(arguments)
        if function == "Fn::Equals":
            return self.parameter(arguments[0]) == self.parameter(arguments[1])
        if function == "Fn::Not":
            return not self.condition(arguments[0])
        if function == "Fn::And":
            return all(map(self.condition, arguments))
        if function == "Fn::Or":
            return any(map(self.condition, arguments))
        raise AssertionError(expression)

    def parameter(self, value):
        """A `Ref` to a parameter: its value; anything else as it is."""
        return self.parameters[value["Ref"]] if isinstance(value, dict) and "Ref" in value else value

    def resolve(self, value):
        if isinstance(value, dict):
            if "Fn::If" in value:
                name, then, otherwise = value["Fn::If"]
                return self.resolve(then if self.condition(name) else otherwise)
            if value == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
        if isinstance(value, list):
            return [v for v in map(self.resolve, value) if v is not _NO_VALUE]
        return value

    @property
    def resources(self) -> dict:
        return {name: self.resolve(body) for name, body in self.template["Resources"].items()
                if "Condition" not in body or self.condition(body["Condition"])}

    def environment(self) -> dict:
        container = self.resources["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        return {e["Name"]: e["Value"] for e in container["Environment"]}


@pytest.fixture(scope="module")
def module() -> Module:
    return Module(MODULE)


# --- syntax ---

def test_every_terraform_file_parses_and_pins_terraform_and_the_aws_provider():
    files = sorted(MODULE.rglob("*.tf"))
    assert len(files) >= 9, files
    roots = {MODULE} | {p.parent for p in files if "examples" in p.parts}
    assert len(roots) >= 3, roots  # the module and its examples
    for path in files:
        parse_tf(path)  # raises on a syntax error
    for root in roots:
        blocks = [b for p in root.glob("*.tf") for b in parse_tf(p).get("terraform", [])]
        assert len(blocks) == 1, f"{root}: one terraform block"
        assert re.fullmatch(r">= 1\.\d+\.\d+, < 2\.0\.0", blocks[0]["required_version"]), root
        aws = blocks[0]["required_providers"][0]["aws"]
        assert aws["source"] == "hashicorp/aws" and re.fullmatch(r">= 5\.\d+, < 7\.0", aws["version"]), root


def test_only_aws_provider_resources_and_every_input_documented_and_validated_where_a_bad_value_breaks(module):
    assert module.resources and all(key.startswith("aws_") for key in module.resources), sorted(module.resources)
    for name, variable in module.variables.items():
        assert variable.get("description"), f"variable {name} has no description"
    validated = {name for name, variable in module.variables.items() if variable.get("validation")}
    must = {"name", "vpc_id", "public_subnet_ids", "private_subnet_ids", "certificate_arn", "load_balancer_type",
            "idle_timeout_seconds", "task_cpu", "task_memory", "log_retention_days", "redis_engine_version",
            "redis_replicas_per_shard", "management_port", "management_cidr_blocks", "environment", "secrets",
            "drain_delay", "drain_grace_period", "client_cidr_blocks"}
    assert must <= validated, must - validated
    for name, output in module.outputs.items():
        assert output.get("description"), f"output {name} has no description"


def test_readme_tables_list_every_input_and_output(module):
    readme = (MODULE / "README.md").read_text()
    inputs = readme.split("## Inputs", 1)[1].split("## Outputs", 1)[0]
    outputs = readme.split("## Outputs", 1)[1].split("\n## ", 1)[0]
    documented_inputs = set(re.findall(r"^\| `?([a-z0-9_]+)`? \|", inputs, re.M))
    documented_outputs = set(re.findall(r"^\| `?([a-z0-9_]+)`? \|", outputs, re.M))
    assert documented_inputs == set(module.variables), (set(module.variables) ^ documented_inputs)
    assert documented_outputs == set(module.outputs), (set(module.outputs) ^ documented_outputs)
    for name, variable in module.variables.items():
        row = re.search(rf"^\| `?{name}`? \|.*$", inputs, re.M)[0]
        required = "default" not in variable
        assert row.rstrip(" |").endswith("yes" if required else "no"), row


# --- security ---

def checkov(directory: Path, framework: str) -> dict:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: scripts/test installs it (tests/requirements-checkov.txt)"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "LOG_LEVEL": "ERROR"}
    env.pop("BC_API_KEY", None)
    result = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", framework, "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-4000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1 and reports[0]["check_type"] == framework, result.stdout[:2000]
    return reports[0]


@pytest.mark.parametrize("directory,framework", [("deploy/terraform", "terraform"), ("deploy/aws", "cloudformation")])
def test_checkov_finds_no_failed_check(directory, framework):
    report = checkov(ROOT / directory, framework)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
              for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0, summary
    # A scan that read nothing would pass too: each template and the module's resources were checked.
    assert summary["resource_count"] >= (40 if framework == "terraform" else 50), summary
    assert summary["passed"] >= 100, summary
    for check in report["results"]["skipped_checks"]:
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) >= 30, f"{check['check_id']} on {check['resource']} is skipped without a reason"


def test_every_checkov_skip_sits_in_its_resource_with_a_reason():
    skips = []
    for path in MODULE.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.fullmatch(r"\s*#checkov:skip=(CKV2?_AWS_\d+):(.{30,})", line)
                assert match, f"{path.name}: {line.strip()}"
                skips.append(match[1])
    for name in TEMPLATES:
        for resource in load_template(name)["Resources"].values():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]) and len(skip.get("comment", "")) >= 30, skip
                skips.append(skip["id"])
    # The skips the docs explain (docs/deploy.md, "What checkov checks"); a new one must be explained there too.
    documented = set(re.findall(r"`(CKV2?_AWS_\d+)`", (ROOT / "docs" / "deploy.md").read_text()))
    assert set(skips) <= documented, set(skips) - documented


# --- the module and the templates deploy the same thing ---

def test_terraform_and_cloudformation_expose_the_same_settings(module):
    tf, r = module, module.resources
    public_tg, management_tg = r["aws_lb_target_group.public"], r["aws_lb_target_group.management"]
    redis = r["aws_elasticache_replication_group.redis"]
    # jsonencode([{...}]) and merge(var.environment, {...}) come back as expression text.
    definition = r["aws_ecs_task_definition.switchboard"]["container_definitions"]
    environment_text = tf.locals["container_environment"]
    for expected in ("readonlyRootFilesystem = true", "stopTimeout = local.stop_timeout_seconds",
                     "containerPort = local.container_port", "containerPort = var.management_port",
                     'softLimit = local.nofile_limit', 'hardLimit = local.nofile_limit',
                     'command = ["CMD", "/app/switchboard", "health"]', "name = local.container_name"):
        assert expected in definition, expected
    for expected in ("SWITCHBOARD_REDIS_URL = local.redis_url", "SWITCHBOARD_REDIS_MODE = local.redis_mode",
                     'SWITCHBOARD_DRAIN_DELAY = "${var.drain_delay}s"',
                     'SWITCHBOARD_DRAIN_GRACE_PERIOD = "${var.drain_grace_period}s"',
                     "SWITCHBOARD_METRICS_EMF_INTERVAL = local.emf_interval",
                     "SWITCHBOARD_METRICS_EMF_SERVICE = local.emf_service",
                     "SWITCHBOARD_MANAGEMENT_PORT = tostring(var.management_port)"):
        assert expected in environment_text, expected
    secrets_text = tf.locals["container_secrets"]
    assert "SWITCHBOARD_REDIS_PASSWORD" in secrets_text and "SWITCHBOARD_MANAGEMENT_BEARER_TOKEN" in secrets_text
    connections = r["aws_appautoscaling_policy.connections"]["target_tracking_scaling_policy_configuration"][0]
    metric = connections["customized_metric_specification"][0]
    service = r["aws_ecs_service.switchboard"]

    for name in TEMPLATES:
        t = load_template(name)
        res, params = t["Resources"], t["Parameters"]
        tg, mtg = res["TargetGroup"]["Properties"], res["ManagementTargetGroup"]["Properties"]
        container = res["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        env = container_environment(t)
        where = f"switchboard-{name}.yaml"

        # ports
        port = tf.resolve(public_tg["port"])
        assert port == tf.locals["container_port"] == tg["Port"] == container["PortMappings"][0]["ContainerPort"], where
        assert res["ServiceIngressFromLoadBalancer"]["Properties"]["FromPort"] == port, where
        management_port = tf.default("management_port")
        assert tf.resolve(management_tg["port"]) == management_port == mtg["Port"], where
        assert env["SWITCHBOARD_MANAGEMENT_PORT"] == str(management_port), where
        assert container["PortMappings"][1]["ContainerPort"] == management_port, where
        assert res["ManagementListener"]["Properties"]["Port"] == management_port, where
        assert res["ManagementLoadBalancer"]["Properties"]["Scheme"] == "internal"
        assert r["aws_lb.management"]["internal"] is True and r["aws_lb.public"]["internal"] is False
        assert tf.locals["public_port"] == res["Listener"]["Properties"]["Port"] == 443, where
        assert tf.locals["ssl_policy"] == res["Listener"]["Properties"]["SslPolicy"], where

        # health checks, on both target groups
        for tf_group, cfn_group in ((public_tg, tg), (management_tg, mtg)):
            check = tf_group["health_check"][0]
            assert tf.resolve(check["path"]) == cfn_group["HealthCheckPath"] == "/health", where
            assert tf.resolve(check["interval"]) == cfn_group["HealthCheckIntervalSeconds"], where
            assert tf.resolve(check["healthy_threshold"]) == cfn_group["HealthyThresholdCount"], where
            assert tf.resolve(check["unhealthy_threshold"]) == cfn_group["UnhealthyThresholdCount"], where
            assert check["protocol"] == cfn_group.get("HealthCheckProtocol", "HTTP") == "HTTP", where
            assert tf.resolve(tf_group["deregistration_delay"]) == int(
                attributes({"Properties": cfn_group}, "TargetGroupAttributes")["deregistration_delay.timeout_seconds"]), where

        # the drain: deregistration delay, stop timeout, drain.delay + drain.grace_period inside them
        delay = tf.locals["deregistration_delay_seconds"]
        assert tf.locals["stop_timeout_seconds"] == container["StopTimeout"] == delay, where
        assert env["SWITCHBOARD_DRAIN_DELAY"] == f"{tf.default('drain_delay')}s", where
        assert env["SWITCHBOARD_DRAIN_GRACE_PERIOD"] == f"{tf.default('drain_grace_period')}s", where
        assert tf.default("drain_delay") + tf.default("drain_grace_period") < container["StopTimeout"], where
        assert tf.locals["health_check_grace_seconds"] == res["Service"]["Properties"]["HealthCheckGracePeriodSeconds"]
        assert tf.locals["nofile_limit"] == container["Ulimits"][0]["SoftLimit"] == container["Ulimits"][0]["HardLimit"]
        assert container["ReadonlyRootFilesystem"] is True, where
        assert container["HealthCheck"]["Command"] == ["CMD", "/app/switchboard", "health"], where
        assert {s["Name"] for s in container["Secrets"]} == {"SWITCHBOARD_REDIS_PASSWORD", "SWITCHBOARD_MANAGEMENT_BEARER_TOKEN"}

        # Redis (the default kind, standalone): TLS in transit, at rest, AUTH, failover, the same engine and size
        props = Stack(t, {}).resources["Redis"]["Properties"]
        assert redis["transit_encryption_enabled"] is True and props["TransitEncryptionEnabled"] is True, where
        assert redis["at_rest_encryption_enabled"] is True and props["AtRestEncryptionEnabled"] is True, where
        assert redis["automatic_failover_enabled"] is True and props["AutomaticFailoverEnabled"] is True, where
        assert redis["multi_az_enabled"] is True and props["MultiAZEnabled"] is True, where
        assert "auth_token" in redis and "AuthToken" in props, where
        assert tf.default("redis_engine_version") == props["EngineVersion"], where
        assert props["CacheNodeType"] == {"Ref": "RedisNodeType"}, where
        assert params["RedisNodeType"]["Default"] == tf.default("redis_node_type"), where
        assert tf.default("redis_replicas_per_shard") + 1 == props["NumCacheClusters"], where
        assert tf.default("redis_snapshot_retention_days") == props["SnapshotRetentionLimit"], where
        assert Stack(t, {}).environment()["SWITCHBOARD_REDIS_URL"]["Fn::Sub"].startswith("rediss://"), where
        # the other kinds: the same choices, the same sizes (test_each_redis_kind_... follows each one through)
        assert params["RedisKind"]["Default"] == "standalone" and tf.default("redis_cluster_mode") is False
        assert tf.default("redis_serverless") is False and tf.default("redis_url") is None, where
        assert params["RedisShards"]["Default"] == tf.default("redis_shards"), where
        assert params["RedisServerlessEngine"]["Default"] == tf.default("redis_serverless_engine"), where
        assert set(params["RedisServerlessEngine"]["AllowedValues"]) == {"valkey", "redis"}, where
        assert '"valkey", "redis"' in tf.variables["redis_serverless_engine"]["validation"][0]["condition"]

        # load balancer: idle timeout (ALB), cross-zone and client IPs (NLB), no stickiness
        lb = attributes(res["LoadBalancer"], "LoadBalancerAttributes")
        if name == "alb":
            assert params["IdleTimeoutSeconds"]["Default"] == tf.default("idle_timeout_seconds"), where
            assert lb["routing.http.drop_invalid_header_fields.enabled"] == "true"
            assert attributes(res["TargetGroup"], "TargetGroupAttributes")["stickiness.enabled"] == "false"
            stickiness = public_tg["dynamic"][0]["stickiness"]
            assert stickiness["for_each"] == "${local.alb ? [1] : []}" and stickiness["content"][0]["enabled"] is False
        else:
            assert lb["load_balancing.cross_zone.enabled"] == "true" and r["aws_lb.public"]["enable_cross_zone_load_balancing"]
            tga = attributes(res["TargetGroup"], "TargetGroupAttributes")
            assert tga["preserve_client_ip.enabled"] == "true" and public_tg["preserve_client_ip"] == "${local.alb ? null : true}"
            assert tga["deregistration_delay.connection_termination.enabled"] == "false", where
            assert public_tg["connection_termination"] == "${local.alb ? null : false}"
        assert params["DeletionProtection"]["Default"] == str(tf.default("deletion_protection")).lower(), where

        # logs
        assert params["LogRetentionDays"]["Default"] == tf.default("log_retention_days"), where
        assert "KmsKeyId" in res["LogGroup"]["Properties"] and "kms_key_id" in r["aws_cloudwatch_log_group.switchboard"]

        # scaling: the metric the binary emits, the same targets and bounds
        scaling = res["ConnectionScaling"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        spec = scaling["CustomizedMetricSpecification"]
        assert tf.resolve(metric["namespace"]) == spec["Namespace"] == "Switchboard", where
        assert tf.resolve(metric["metric_name"]) == spec["MetricName"] == "ActiveConnections", where
        assert tf.resolve(metric["metric_dimension"][0]["name"]) == spec["Dimensions"][0]["Name"] == "ServiceName"
        assert tf.resolve(metric["statistic"]) == spec["Statistic"] and metric["unit"] == spec["Unit"], where
        assert metric["metric_dimension"][0]["value"] == "${local.emf_service}"
        assert spec["Dimensions"][0]["Value"] == env["SWITCHBOARD_METRICS_EMF_SERVICE"], where
        assert tf.locals["emf_interval"] == env["SWITCHBOARD_METRICS_EMF_INTERVAL"], where
        assert tf.resolve(connections["scale_in_cooldown"]) == scaling["ScaleInCooldown"], where
        assert tf.resolve(connections["scale_out_cooldown"]) == scaling["ScaleOutCooldown"], where
        for variable, parameter in (("target_connections_per_task", "TargetConnectionsPerTask"),
                                    ("target_cpu_percent", "TargetCpuPercent"), ("min_tasks", "MinTasks"),
                                    ("max_tasks", "MaxTasks"), ("desired_count", "DesiredCount"),
                                    ("task_cpu", "TaskCpu"), ("task_memory", "TaskMemory")):
            assert tf.default(variable) == params[parameter]["Default"], f"{where}: {variable} / {parameter}"

        # deployment: rolling with a circuit breaker, private tasks
        deployment = res["Service"]["Properties"]["DeploymentConfiguration"]
        assert service["deployment_minimum_healthy_percent"] == deployment["MinimumHealthyPercent"], where
        assert service["deployment_maximum_percent"] == deployment["MaximumPercent"], where
        assert service["deployment_circuit_breaker"][0]["rollback"] is deployment["DeploymentCircuitBreaker"]["Rollback"]
        assert service["network_configuration"][0]["assign_public_ip"] is False
        assert res["Service"]["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
        assert len(service["load_balancer"]) == len(res["Service"]["Properties"]["LoadBalancers"]) == 2, where


REDIS_RESOURCES = {"aws_elasticache_subnet_group.redis", "aws_elasticache_replication_group.redis",
                   "aws_elasticache_user.redis_default", "aws_elasticache_user_group.redis",
                   "aws_elasticache_serverless_cache.redis", "aws_secretsmanager_secret.redis_auth",
                   "aws_secretsmanager_secret_version.redis_auth", "aws_security_group.redis",
                   "aws_vpc_security_group_ingress_rule.redis_from_tasks", "aws_vpc_security_group_egress_rule.tasks_to_redis"}


def test_each_redis_kind_creates_its_cache_and_gives_the_tasks_its_url_and_mode(module):
    """standalone: the primary endpoint, redis.mode standalone. cluster (cluster-mode replication group) and serverless
    (ElastiCache Serverless): a rediss:// URL and redis.mode cluster, which sharded pub/sub and the hash-tagged keys
    need. Terraform's redis_url: nothing created, the URL and redis_mode given. Both tools, each kind followed through."""
    r = module.resources
    replicas, snapshots = module.default("redis_replicas_per_shard"), module.default("redis_snapshot_retention_days")
    secrets_and_groups = {"aws_secretsmanager_secret.redis_auth", "aws_secretsmanager_secret_version.redis_auth",
                          "aws_security_group.redis", "aws_vpc_security_group_ingress_rule.redis_from_tasks",
                          "aws_vpc_security_group_egress_rule.tasks_to_redis"}
    replication_group = {"aws_elasticache_subnet_group.redis", "aws_elasticache_replication_group.redis"}
    serverless = {"aws_elasticache_user.redis_default", "aws_elasticache_user_group.redis",
                  "aws_elasticache_serverless_cache.redis"}
    kinds = {  # Terraform inputs, what is created, the endpoint attribute, redis.mode
        "standalone": ({}, secrets_and_groups | replication_group, "replication_group.redis[*].primary_endpoint_address", "standalone"),
        "cluster": ({"redis_cluster_mode": True}, secrets_and_groups | replication_group,
                    "replication_group.redis[*].configuration_endpoint_address", "cluster"),
        "serverless": ({"redis_serverless": True}, secrets_and_groups | serverless,
                       "serverless_cache.redis[*].endpoint[0].address", "cluster"),
    }
    for kind, (inputs, expected, endpoint, mode) in kinds.items():
        assert created(module, inputs) & REDIS_RESOURCES == expected, kind
        url = tf_eval(module.locals["redis_url"], module, inputs)
        assert url == f"rediss://one(aws_elasticache_{endpoint}):6379", (kind, url)
        assert tf_eval(module.locals["redis_mode"], module, inputs) == mode, kind
        assert tf_eval(module.outputs["redis_mode"]["value"], module, inputs) == mode, kind
    assert "local.create_redis" in module.locals["container_secrets"]  # no module Redis secret for a given URL
    for mode in (None, "standalone", "cluster", "auto"):
        inputs = {"redis_url": "rediss://cache.example.internal:6379", "redis_mode": mode}
        assert created(module, inputs) & REDIS_RESOURCES == set(), mode  # a cache the module does not create
        assert tf_eval(module.locals["redis_url"], module, inputs) == "rediss://cache.example.internal:6379"
        assert tf_eval(module.locals["redis_mode"], module, inputs) == (mode or "standalone")
    assert '"standalone", "cluster", "auto"' in module.variables["redis_mode"]["validation"][0]["condition"]

    # The combinations that name two kinds stop the plan (preconditions: variables may not read each other before 1.9).
    redis_checks = [p["condition"] for p in r["aws_ecs_task_definition.switchboard"]["lifecycle"][0]["precondition"]
                    if "redis" in p["condition"]]
    assert len(redis_checks) == 3, redis_checks
    accepted = lambda inputs: all(tf_eval(c, module, inputs) for c in redis_checks)
    for inputs, _, _, _ in kinds.values():
        assert accepted(inputs), inputs
    assert accepted({"redis_url": "redis://cache:6379", "redis_mode": "cluster"})
    for refused in ({"redis_cluster_mode": True, "redis_serverless": True}, {"redis_mode": "cluster"},
                    {"redis_url": "rediss://cache:6379", "redis_serverless": True},
                    {"redis_url": "rediss://cache:6379", "redis_cluster_mode": True}):
        assert not accepted(refused), refused

    # What each resource carries: cluster mode, engine 7, TLS + AUTH + KMS; Serverless with its user group.
    group = r["aws_elasticache_replication_group.redis"]
    assert tf_eval(group["parameter_group_name"], module, {"redis_cluster_mode": True}) == "default.redis7.cluster.on"
    assert tf_eval(group["num_node_groups"], module, {"redis_cluster_mode": True, "redis_shards": 5}) == 5
    assert tf_eval(group["replicas_per_node_group"], module, {"redis_cluster_mode": True}) == replicas
    assert tf_eval(group["num_cache_clusters"], module, {"redis_cluster_mode": True}) is None
    assert group["engine_version"] == "${var.redis_engine_version}" and module.default("redis_engine_version").startswith("7.")
    cache = r["aws_elasticache_serverless_cache.redis"]
    assert cache["engine"] == "${var.redis_serverless_engine}" and cache["kms_key_id"] == "${aws_kms_key.switchboard.arn}"
    assert tf_eval(cache["major_engine_version"], module, {"redis_serverless_engine": "redis"}) == "7"
    assert cache["subnet_ids"] == "${var.private_subnet_ids}" and cache["security_group_ids"] == ["${aws_security_group.redis[0].id}"]
    assert cache["user_group_id"] == "${aws_elasticache_user_group.redis[0].user_group_id}"
    assert cache["snapshot_retention_limit"] == "${var.redis_snapshot_retention_days}"
    user = r["aws_elasticache_user.redis_default"]
    assert user["user_name"] == "default" and user["access_string"] == "on ~* &* +@all"  # every channel: sharded pub/sub
    assert user["authentication_mode"] == [{"type": "password", "passwords": ["${aws_secretsmanager_secret_version.redis_auth[0].secret_string}"]}]
    assert r["aws_elasticache_user_group.redis"]["user_ids"] == ["${aws_elasticache_user.redis_default[0].user_id}"]

    for name in TEMPLATES:
        template = load_template(name)
        assert template["Parameters"]["RedisKind"]["AllowedValues"] == list(kinds), name
        for kind, (_, _, _, mode) in kinds.items():
            for engine in ("valkey", "redis"):
                stack = Stack(template, {"RedisKind": kind, "RedisServerlessEngine": engine})
                res, env, where = stack.resources, stack.environment(), f"switchboard-{name}.yaml {kind}"
                assert env["SWITCHBOARD_REDIS_MODE"] == mode, where
                assert stack.resolve(template["Outputs"]["RedisMode"]["Value"]) == mode, where
                url = env["SWITCHBOARD_REDIS_URL"]["Fn::Sub"]
                assert {"RedisAuthToken", "RedisSecurityGroup", "RedisIngressFromService"} <= set(res), where
                secret = "{{resolve:secretsmanager:${RedisAuthToken}:SecretString}}"
                if kind == "serverless":
                    assert url == "rediss://${RedisServerless.Endpoint.Address}:${RedisServerless.Endpoint.Port}", where
                    assert not {"Redis", "RedisSubnetGroup"} & set(res), where
                    props = res["RedisServerless"]["Properties"]
                    assert stack.parameter(props["Engine"]) == engine and props.get("MajorEngineVersion") == ("7" if engine == "redis" else None)
                    assert props["KmsKeyId"] == {"Fn::GetAtt": "Key.Arn"} and props["SubnetIds"] == {"Ref": "PrivateSubnetIds"}
                    assert props["SecurityGroupIds"] == [{"Ref": "RedisSecurityGroup"}], where
                    assert props["UserGroupId"] == {"Ref": "RedisUserGroup"} and props["SnapshotRetentionLimit"] == snapshots
                    user = res["RedisDefaultUser"]["Properties"]
                    assert user["UserName"] == "default" and user["AccessString"] == "on ~* &* +@all", where
                    assert user["AuthenticationMode"] == {"Type": "password", "Passwords": [{"Fn::Sub": secret}]}, where
                    assert res["RedisUserGroup"]["Properties"]["UserIds"] == [{"Ref": "RedisDefaultUser"}], where
                    continue
                assert not {"RedisServerless", "RedisUserGroup", "RedisDefaultUser"} & set(res), where
                props = res["Redis"]["Properties"]
                assert props["AuthToken"] == {"Fn::Sub": secret} and props["TransitEncryptionEnabled"] is True, where
                assert props["KmsKeyId"] == {"Ref": "Key"} and props["EngineVersion"].startswith("7."), where
                if kind == "cluster":
                    assert url == "rediss://${Redis.ConfigurationEndPoint.Address}:${Redis.ConfigurationEndPoint.Port}"
                    assert props["ClusterMode"] == "enabled" and props["NumNodeGroups"] == {"Ref": "RedisShards"}, where
                    assert props["ReplicasPerNodeGroup"] == replicas and "NumCacheClusters" not in props, where
                    assert props["CacheParameterGroupName"] == "default.redis7.cluster.on", where
                else:
                    assert url == "rediss://${Redis.PrimaryEndPoint.Address}:${Redis.PrimaryEndPoint.Port}", where
                    assert props["NumCacheClusters"] == replicas + 1 and "NumNodeGroups" not in props, where
                    assert "ClusterMode" not in props and "CacheParameterGroupName" not in props, where


def test_both_templates_create_the_same_redis():
    alb, nlb = load_template("alb"), load_template("nlb")
    names = [n for n in alb["Resources"] if n.startswith("Redis")]
    assert len(names) >= 7 and names == [n for n in nlb["Resources"] if n.startswith("Redis")]
    for name in names:
        assert alb["Resources"][name] == nlb["Resources"][name], name
    for name in ("RedisKind", "RedisNodeType", "RedisShards", "RedisServerlessEngine"):
        assert alb["Parameters"][name] == nlb["Parameters"][name], name
    assert alb["Conditions"] == nlb["Conditions"]
    environment = lambda t: t["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]
    assert [e for e in environment(alb) if "REDIS" in e["Name"]] == [e for e in environment(nlb) if "REDIS" in e["Name"]]


def test_every_switchboard_variable_the_deployments_set_is_one_the_binary_knows(module):
    schema = (ROOT / "Sources" / "SwitchboardConfiguration" / "ConfigurationSchema.swift").read_text()
    keys = re.findall(r'(?:\.scalar\(\s*|key:\s*)"([a-z][a-z0-9_.-]*)"', schema)
    known = {"SWITCHBOARD_" + re.sub(r"[.-]", "_", key).upper() for key in keys}
    assert "SWITCHBOARD_MANAGEMENT_PORT" in known and "SWITCHBOARD_REDIS_URL" in known, sorted(known)
    used = set(re.findall(r"\b(SWITCHBOARD_[A-Z0-9_]+)\b", "\n".join(
        p.read_text() for p in [*MODULE.rglob("*.tf"), *TEMPLATES.values()])))
    assert used and used <= known, used - known  # the gateway refuses to start on an unknown SWITCHBOARD_* variable


def test_security_groups_open_exactly_the_designed_paths(module):
    """Clients → load balancer 443 → tasks 8080; callers → internal NLB → tasks 9090; tasks → Redis 6379 and 443 out."""
    def ref(value):
        match = re.fullmatch(r"\$\{aws_security_group\.([a-z_]+)(?:\[0\])?\.id\}", str(value))
        return f"sg:{match[1]}" if match else value

    def port(value):
        return module.resolve(value) if not str(value).startswith("${var.management_port") else "management"

    tf_rules = set()
    for key, body in module.resources.items():
        kind = key.split(".")[0]
        if kind == "aws_security_group":
            assert "ingress" not in body and "egress" not in body, f"{key}: rules are separate resources"
        if kind.startswith("aws_vpc_security_group_"):
            peer = body.get("cidr_ipv4") or ref(body.get("referenced_security_group_id"))
            if peer == "${each.value}":
                peer = body["for_each"]
            direction = "in" if "ingress" in kind else "out"
            tf_rules.add((ref(body["security_group_id"]), direction, port(body["from_port"]), port(body["to_port"]), peer))
    assert tf_rules == {
        ("sg:load_balancer", "in", 443, 443, "${toset(var.client_cidr_blocks)}"),
        ("sg:load_balancer", "out", 8080, 8080, "sg:tasks"),
        ("sg:management", "in", "management", "management", "${toset(local.management_cidr_blocks)}"),
        ("sg:management", "in", "management", "management", "${toset(var.management_security_group_ids)}"),
        ("sg:management", "out", "management", "management", "sg:tasks"),
        ("sg:tasks", "in", 8080, 8080, "sg:load_balancer"),
        ("sg:tasks", "in", "management", "management", "sg:management"),
        ("sg:tasks", "out", 443, 443, "0.0.0.0/0"),
        ("sg:tasks", "out", 6379, 6379, "sg:redis"),
        ("sg:redis", "in", 6379, 6379, "sg:tasks"),
    }, tf_rules

    for name in TEMPLATES:
        resources = load_template(name)["Resources"]
        rules = set()

        def peer(rule):
            for key in ("CidrIp", "SourceSecurityGroupId", "DestinationSecurityGroupId"):
                if key in rule:
                    value = rule[key]
                    return f"ref:{value['Ref']}" if isinstance(value, dict) else value
            raise AssertionError(rule)

        for logical, resource in resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::EC2::SecurityGroup":
                for direction, key in (("in", "SecurityGroupIngress"), ("out", "SecurityGroupEgress")):
                    for rule in props.get(key, []):
                        assert rule.get("Description"), (name, logical, rule)
                        rules.add((logical, direction, str(rule["IpProtocol"]), rule.get("FromPort"), peer(rule)))
            elif resource["Type"] in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
                assert props.get("Description"), (name, logical)
                direction = "in" if resource["Type"].endswith("Ingress") else "out"
                rules.add((props["GroupId"]["Ref"], direction, props["IpProtocol"], props["FromPort"], peer(props)))
        clients = "0.0.0.0/0" if name == "alb" else "ref:ClientCidr"
        assert rules == {
            ("LoadBalancerSecurityGroup", "in", "tcp", 443, clients),
            ("LoadBalancerSecurityGroup", "out", "tcp", 8080, "ref:ServiceSecurityGroup"),
            ("ManagementSecurityGroup", "in", "tcp", 9090, "ref:ManagementClientCidr"),
            ("ManagementSecurityGroup", "out", "tcp", 9090, "ref:ServiceSecurityGroup"),
            ("ServiceSecurityGroup", "in", "tcp", 8080, "ref:LoadBalancerSecurityGroup"),
            ("ServiceSecurityGroup", "in", "tcp", 9090, "ref:ManagementSecurityGroup"),
            ("ServiceSecurityGroup", "out", "tcp", 443, "0.0.0.0/0"),
            ("ServiceSecurityGroup", "out", "tcp", 6379, "ref:RedisSecurityGroup"),
            ("RedisSecurityGroup", "in", "tcp", 6379, "ref:ServiceSecurityGroup"),
            ("RedisSecurityGroup", "out", "-1", None, "127.0.0.1/32"),  # replaces the default allow-all egress
        }, (name, rules)
