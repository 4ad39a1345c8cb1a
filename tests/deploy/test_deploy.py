"""Cross-checks of the deployment files (docker-compose.yml, k8s/*.yaml)
against the code, without a Docker engine or a cluster: every variable given
to a service is one the service reads (its --help lists them), every secret
key is one the documented .env holds, every probe and Service port is one the
container declares, and compose and Kubernetes run the same five services
from the same image with the same admin ports, next to the Kafka and
PostgreSQL versions the other tests run against. (run.sh first validates the
manifests against the Kubernetes API's schemas.)"""

import os
import re
import subprocess

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.path.join(ROOT, os.environ.get("BUILD_DIR", "build"))
SERVICES = ["api", "checkout", "inventory", "payment", "dispatch"]
SECRET = "widgetstore-db"


def service_variables(service):
    """The environment variables the service binary reads, from --help."""
    out = subprocess.run([os.path.join(BUILD_DIR, "services", service), "--help"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    names = set(re.findall(r"^  ([A-Z][A-Z0-9_]*) \(", out, re.MULTILINE))
    assert "DATABASE_URL" in names and "KAFKA_BROKERS" in names, out
    return names


@pytest.fixture(scope="module")
def variables():
    return {service: service_variables(service) for service in SERVICES}


@pytest.fixture(scope="module")
def compose():
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def manifests():
    docs = []
    k8s = os.path.join(ROOT, "k8s")
    for name in sorted(os.listdir(k8s)):
        if name.endswith(".yaml"):
            with open(os.path.join(k8s, name)) as f:
                docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def env_file_keys():
    """The keys of the .env that docker-compose.yml documents and requires."""
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        return set(re.findall(r"\$\{([A-Z_]+):\?", f.read()))


def pod_specs(manifests):
    for doc in manifests:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def test_the_help_lists_what_the_services_read(variables):
    assert "INBOX_PRUNE_INTERVAL_MS" in variables["payment"]
    assert "OPEN_PAYMENT_EARLY" in variables["checkout"]
    assert "OPEN_PAYMENT_EARLY" not in variables["payment"]
    assert "HTTP_PORT" in variables["api"]
    result = subprocess.run([os.path.join(BUILD_DIR, "services", "api"), "--no-such-flag"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and "--help" in result.stderr
    # Bad dead-letters usage is told before any configuration is needed.
    result = subprocess.run([os.path.join(BUILD_DIR, "services", "payment"), "dead-letters",
                             "bogus"], env={}, capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and "usage: payment dead-letters" in result.stderr


BAD_SETTINGS = {
    "LOG_LEVEL": "loud",
    "KAFKA_TOPIC_PREFIX": "dev/",  # '/' is not allowed in a Kafka topic name
    "DATABASE_URL": "postgresql://db/store?no_such_option=1",
    # below KAFKA_SESSION_TIMEOUT_MS (1500 by default): librdkafka would refuse it
    "KAFKA_MAX_POLL_INTERVAL_MS": "1200",
}


def start_with(service, **settings):
    """Starts the service binary with settings (no broker or database can be
    reached at these addresses) and waits up to 10 s for it to exit."""
    env = {"DATABASE_URL": "postgresql://127.0.0.1:1/none", "KAFKA_BROKERS": "127.0.0.1:1",
           "ADMIN_PORT": "0", "HTTP_PORT": "1", **settings}
    return subprocess.run([os.path.join(BUILD_DIR, "services", service)], env=env,
                          capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("name", sorted(BAD_SETTINGS))
def test_a_setting_that_can_never_work_stops_the_service_at_once(name):
    # Not a retry loop on a connection or a topic that will never come: exit
    # 2 with the variable and the reason, as for any other bad setting.
    for service in SERVICES:
        result = start_with(service, **{name: BAD_SETTINGS[name]})
        assert result.returncode == 2, (service, result.stderr[-500:])
        assert f"bad configuration:\n{name}: " in result.stderr, result.stderr
    everything = start_with("payment", **BAD_SETTINGS)
    assert everything.returncode == 2
    assert all(f"\n{n}: " in everything.stderr for n in BAD_SETTINGS), everything.stderr


@pytest.mark.parametrize("url,reason", [
    ("postgresql://db:99999/store", 'port "99999" is not 1-65535'),
    ("postgresql://a:5432,b:x/store", 'port "x" is not 1-65535'),
    ("postgresql://db/store?sslmode=requre", 'sslmode "requre" is not disable'),
])
def test_a_database_url_libpq_would_refuse_on_connecting_stops_the_service(url, reason):
    for service in SERVICES:
        result = start_with(service, DATABASE_URL=url)
        assert result.returncode == 2, (service, result.stderr[-500:])
        assert f"bad configuration:\nDATABASE_URL: {reason}" in result.stderr, result.stderr
    good = start_with("payment", DATABASE_URL="postgresql://a:5432,b:/store?sslmode=verify-full",
                      LOG_LEVEL="loud")  # exits for LOG_LEVEL alone
    assert good.returncode == 2 and "DATABASE_URL" not in good.stderr, good.stderr


def test_a_page_the_api_cannot_serve_stops_it_at_once(tmp_path):
    big = tmp_path / "big.html"
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    for path, reason in ((tmp_path, "cannot read"), (tmp_path / "missing.html", "cannot open"),
                         (big, "larger than 1 MiB")):
        result = start_with("api", API_PAGE_PATH=str(path))
        assert result.returncode == 2, result.stderr[-500:]
        assert f"API_PAGE_PATH: {reason}" in result.stderr, result.stderr


def test_compose_gives_each_service_only_variables_it_reads(compose, variables):
    for service in SERVICES:
        given = set(compose["services"][service]["environment"])
        unknown = given - variables[service]
        assert not unknown, f"compose gives {service} {unknown}, which it does not read"
        assert "DATABASE_URL" in given


def test_kubernetes_runs_the_five_services_like_compose(manifests, compose):
    deployments = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Deployment"}
    assert sorted(deployments) == sorted(SERVICES)
    for service in SERVICES:
        spec = deployments[service]["spec"]["template"]["spec"]
        main = spec["containers"][0]
        assert main["image"] == compose["services"][service]["image"]
        assert main["command"] == compose["services"][service]["command"]
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["ADMIN_PORT"] == str(compose["services"][service]["environment"]["ADMIN_PORT"])
        # The kubelet probes the pod's address, not its loopback.
        assert env["ADMIN_ADDRESS"] == "0.0.0.0"
        migrate = spec["initContainers"][0]
        assert migrate["command"] == ["bash", "scripts/migrate.sh", service]


def test_kubernetes_gives_each_service_only_variables_it_reads(manifests, variables):
    for doc, spec in pod_specs(manifests):
        for container in containers(spec):
            command = container.get("command", [])
            names = [e["name"] for e in container.get("env", [])]
            # A variable used only to build another one, as in
            # "postgresql://api:$(DB_PASSWORD)@...", is fine.
            values = " ".join(e.get("value", "") for e in container.get("env", []))
            helpers = set(re.findall(r"\$\(([A-Z_]+)\)", values))
            if command and command[0].startswith("/app/bin/"):
                service = command[0].rsplit("/", 1)[1]
                unknown = set(names) - variables[service] - helpers
                assert not unknown, f"{doc['metadata']['name']}: {service} does not read {unknown}"
            if command[:2] == ["bash", "scripts/migrate.sh"]:
                assert f"{command[2].upper()}_OWNER_DATABASE_URL" in names
            # Kubernetes expands $(NAME) only from variables defined above.
            for i, e in enumerate(container.get("env", [])):
                for helper in re.findall(r"\$\(([A-Z_]+)\)", e.get("value", "")):
                    assert helper in names[:i], f"{container['name']}: $({helper}) undefined above"


def test_every_secret_key_is_one_the_env_file_holds(manifests):
    keys = env_file_keys()
    assert {"POSTGRES_PASSWORD", "API_DB_PASSWORD", "DISPATCH_DB_OWNER_PASSWORD"} <= keys
    used = set()
    for doc, spec in pod_specs(manifests):
        for container in containers(spec):
            for e in container.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET, f"{container['name']}: secret {ref['name']}"
                    assert ref["key"] in keys, f"{container['name']}: key {ref['key']}"
                    used.add(ref["key"])
                else:
                    assert "PASSWORD" not in e["name"] or "$(" in e.get("value", ""), \
                        f"{container['name']}: {e['name']} must come from the secret"
    assert used == keys, f"secret keys never used: {keys - used}"


def test_probes_and_services_point_at_declared_ports(manifests):
    pods = {}
    for doc, spec in pod_specs(manifests):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        ports = {}
        for container in spec["containers"]:
            for port in container.get("ports", []):
                ports[port["name"]] = port["containerPort"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                action = container.get(probe, {})
                target = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
                if target is not None:
                    assert target in ports or target in ports.values(), \
                        f"{container['name']} {probe} port {target}"
        pods[doc["metadata"]["name"]] = (labels, ports)
    for service in (d for d in manifests if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matching = [ports for labels, ports in pods.values()
                    if all(labels.get(k) == v for k, v in selector.items())]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {len(matching)}"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in matching[0], \
                f"Service {service['metadata']['name']} targets {port['targetPort']}"


def test_every_resource_is_in_the_namespace_and_runs_unprivileged(manifests):
    for doc in manifests:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "widgetstore", doc["metadata"]["name"]
    for doc, spec in pod_specs(manifests):
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert "memory" in container["resources"]["limits"], container["name"]


def selects(selector, labels):
    """True when a NetworkPolicy podSelector selects a pod with labels."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_network_policies_let_each_service_port_through_and_name_real_ports(manifests):
    policies = [d for d in manifests if d["kind"] == "NetworkPolicy"]
    pods = []
    for doc, spec in pod_specs(manifests):
        if doc["kind"] == "Job":
            continue
        ports = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        pods.append((doc["metadata"]["name"], doc["spec"]["template"]["metadata"]["labels"], ports))
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies), \
        "no default deny"
    for policy in policies:
        selected = [(name, ports) for name, labels, ports in pods
                    if selects(policy["spec"]["podSelector"], labels)]
        assert selected, f"{policy['metadata']['name']} selects no pod"
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                for name, ports in selected:
                    assert port["port"] in ports, f"{policy['metadata']['name']}: {name} {port}"
    # Every port a Service exposes is let in by some policy.
    for service in (d for d in manifests if d["kind"] == "Service"):
        for name, labels, ports in pods:
            if not all(labels.get(k) == v for k, v in service["spec"]["selector"].items()):
                continue
            for port in service["spec"]["ports"]:
                assert any(selects(p["spec"]["podSelector"], labels) and
                           any(port["targetPort"] == q["port"]
                               for rule in p["spec"].get("ingress", []) for q in rule["ports"])
                           for p in policies), \
                    f"no policy lets {service['metadata']['name']}:{port['targetPort']} in"


def images(compose, manifests):
    """Every image compose and Kubernetes run, with where each is named."""
    named = [(f"compose {name}", s["image"]) for name, s in compose["services"].items()
             if "image" in s]
    for doc, spec in pod_specs(manifests):
        named += [(f"k8s {doc['metadata']['name']}", c["image"]) for c in containers(spec)]
    return named


def test_the_containers_run_the_broker_and_database_the_tests_run_against(compose, manifests):
    with open(os.path.join(ROOT, "scripts", "kafka", "pom.xml")) as f:
        kafka = re.search(r"<kafka\.version>([^<]+)<", f.read()).group(1)
    # The server scripts/pg.sh starts: the highest major with an initdb.
    majors = [int(d) for d in os.listdir("/usr/lib/postgresql")
              if d.isdigit() and os.path.exists(f"/usr/lib/postgresql/{d}/bin/initdb")]
    postgres = str(max(majors))
    seen = set()
    for where, image in images(compose, manifests):
        name, _, tag = image.partition(":")
        if name == "apache/kafka":
            assert tag == kafka, f"{where} runs {image}; the tests run Kafka {kafka}"
        elif name == "postgres":
            assert tag == postgres, f"{where} runs {image}; the tests run PostgreSQL {postgres}"
        seen.add(name)
    assert {"apache/kafka", "postgres"} <= seen
