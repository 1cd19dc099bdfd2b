"""risk-policy.v1: the published schema, coherence beyond it, versions, and failing closed.

An invalid document (unknown field, wrong schema id, incoherent limits) is refused with
400 RISK_POLICY_INVALID listing every problem, and the active policy stays as it was; with
no valid policy every side-effecting command is refused with POLICY_INVALID.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from jsonschema import Draft202012Validator

from gate4.risk.v1 import risk_pb2
from gateway.openapi import ApiContract
from services.risk import policy
from tests.support import rpc
from tests.support.problems import assert_problem
from tests.support.risk_rig import DEMO_POLICY, ROOT, RiskRig, new_tenant, policy_doc, struct
from tests.support.stack import LiveStack

SCHEMA_FILE = ROOT / "services" / "risk" / "risk-policy.v1.schema.json"

# The shape agreed with execution, verbatim.
AGREED = {
    "schema": "risk-policy.v1",
    "name": "demo default",
    "limits": {
        "maxOrderNotional": "50000",
        "maxOrderQuantity": "10",
        "maxPositionNotional": "200000",
        "maxOpenOrders": 20,
        "orderRate": {"maxOrders": 30, "windowSeconds": 60},
        "priceCollarPct": "5",
        "markMaxAgeSeconds": 300,
        "maxCapitalAllocation": "1000000",
        "dailyLossLimit": "10000",
    },
    "instruments": {"allowed": ["BTC-USD", "ETH-USD"], "restricted": []},
    "killSwitch": {"maxDrawdownPct": "10", "confirmations": 3, "flattenOnTrip": True},
}


def paths(doc: dict[str, Any]) -> set[str]:
    return {p.path for p in policy.validate(doc)}


def changed(path: str, value: Any) -> dict[str, Any]:
    """The agreed policy with the field at a JSON pointer set (or removed when value is ...)."""
    doc = copy.deepcopy(AGREED)
    *parents, last = path.strip("/").split("/")
    node: Any = doc
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


# -- the published schema -------------------------------------------------------------------


def test_the_service_enforces_the_published_schema() -> None:
    published = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(published)
    assert Path(str(policy.SCHEMA)).resolve() == SCHEMA_FILE
    assert policy.schema() == published
    assert published["properties"]["schema"] == {
        "description": published["properties"]["schema"]["description"],
        "const": "risk-policy.v1",
    }


def test_the_agreed_shape_and_the_demo_policy_are_valid() -> None:
    assert policy.validate(AGREED) == []
    assert policy.validate(DEMO_POLICY) == []
    parsed = policy.parse(DEMO_POLICY)
    assert parsed.limits.order_rate.max_orders == 30
    assert parsed.kill_switch.scopes == {"deployment", "account", "tenant"}
    # Absent instruments: every instrument is allowed, none restricted.
    minimal = changed("/instruments", ...)
    assert policy.validate(minimal) == []
    assert policy.parse(minimal).instruments.allowed == frozenset()


@pytest.mark.parametrize(
    "path",
    [
        "/surprise",
        "/limits/surprise",
        "/limits/orderRate/surprise",
        "/instruments/surprise",
        "/killSwitch/surprise",
    ],
)
def test_unknown_fields_are_refused_at_every_level(path: str) -> None:
    assert paths(changed(path, "x")) == {path}


@pytest.mark.parametrize("schema_id", ["risk-policy.v2", "risk-policy.V1", "", 1])
def test_only_risk_policy_v1_is_accepted(schema_id: Any) -> None:
    problems = policy.validate(changed("/schema", schema_id))
    assert [p.path for p in problems] == ["/schema"]
    assert "risk-policy.v1" in problems[0].message


@pytest.mark.parametrize(
    "path,value",
    [
        ("/limits/maxOrderNotional", 50000),  # decimals are strings
        ("/limits/maxOrderNotional", "5e4"),
        ("/limits/maxOrderNotional", "-1"),
        ("/limits/maxOpenOrders", "20"),  # counts are integers
        ("/limits/maxOpenOrders", 0),
        ("/limits/maxOpenOrders", 2.5),
        ("/limits/orderRate/windowSeconds", 0),
        ("/limits/markMaxAgeSeconds", 86401),
        ("/killSwitch/confirmations", 0),
        ("/killSwitch/flattenOnTrip", "yes"),
        ("/killSwitch/scopes", ["deployment", "planet"]),  # enum
        ("/killSwitch/scopes", []),
        ("/instruments/allowed", ["btc-usd"]),
        ("/instruments/restricted", ["BTC-USD", "BTC-USD"]),
        ("/limits/dailyLossLimit", ...),
        ("/killSwitch", ...),
    ],
)
def test_schema_violations_name_the_field(path: str, value: Any) -> None:
    found = paths(changed(path, value))
    assert any(p == path or p.startswith(path + "/") for p in found), found


@pytest.mark.parametrize(
    "path,value",
    [
        ("/limits/maxOrderNotional", "0"),  # limits positive
        ("/limits/maxOrderQuantity", "0.0"),
        ("/limits/maxPositionNotional", "0"),
        ("/limits/maxCapitalAllocation", "0"),
        ("/limits/dailyLossLimit", "0"),
        ("/limits/priceCollarPct", "0"),  # percentages in range
        ("/limits/priceCollarPct", "100.5"),
        ("/killSwitch/maxDrawdownPct", "0"),
        ("/killSwitch/maxDrawdownPct", "101"),
        ("/limits/maxOrderNotional", "200000.01"),  # min <= max: one order above the position
    ],
)
def test_incoherent_values_are_refused(path: str, value: Any) -> None:
    found = paths(changed(path, value))
    assert path in found
    # A zero position limit is also below the order limit; nothing else is reported.
    assert found <= {path, "/limits/maxOrderNotional"}


def test_percentages_at_their_bounds_and_an_order_limit_equal_to_the_position_limit_are_fine() -> (
    None
):
    doc = policy_doc(
        priceCollarPct="100", maxOrderNotional="200000", killSwitch_maxDrawdownPct="100"
    )
    assert policy.validate(doc) == []
    assert policy.validate(policy_doc(priceCollarPct="0.01")) == []


def test_an_instrument_both_allowed_and_restricted_is_incoherent() -> None:
    doc = policy_doc(instruments_restricted=["ETH-USD"])
    assert [(p.path, p.message) for p in policy.validate(doc)] == [
        ("/instruments/restricted", "ETH-USD is both allowed and restricted")
    ]


def test_every_problem_is_listed_at_once() -> None:
    doc = changed("/schema", "risk-policy.v2")
    doc["limits"]["maxOrderNotional"] = "0"
    doc["limits"]["colour"] = "red"
    del doc["limits"]["dailyLossLimit"]
    doc["killSwitch"]["maxDrawdownPct"] = "150"
    assert paths(doc) == {
        "/schema",
        "/limits/maxOrderNotional",
        "/limits/colour",
        "/limits/dailyLossLimit",
        "/killSwitch/maxDrawdownPct",
    }


def test_the_digest_is_canonical() -> None:
    reordered = json.loads(json.dumps(AGREED, sort_keys=True))
    assert policy.digest(reordered) == policy.digest(AGREED)
    # What crossed protobuf's Struct (20 -> 20.0) digests like the JSON it came from.
    as_floats = changed("/limits/maxOpenOrders", 20.0)
    assert policy.validate(as_floats) == []
    assert policy.digest(as_floats) == policy.digest(AGREED)
    assert policy.digest(changed("/limits/maxOpenOrders", 21)) != policy.digest(AGREED)


def test_the_openapi_examples_are_valid_policies() -> None:
    contract = ApiContract()
    for operation in ("putPolicy", "validatePolicy"):
        spec = contract.operations[operation]
        item = contract.document["paths"][spec.path][spec.method.lower()]
        example = item["requestBody"]["content"]["application/json"]["example"]
        assert policy.validate(example["policy"]) == [], operation


# -- through the RPC: versions and failing closed ---------------------------------------------


def test_no_policy_means_every_side_effect_is_refused(risk_rig: RiskRig) -> None:
    tenant = new_tenant()
    order = risk_rig.check_order(tenant)
    deployment = risk_rig.check_deployment(tenant)
    for decision in (order, deployment):
        assert not decision.approved
        assert decision.outcome == "POLICY_INVALID"
        assert decision.policy_version == ""


def test_an_invalid_put_changes_nothing(risk_rig: RiskRig) -> None:
    tenant = new_tenant()
    with pytest.raises(grpc.RpcError) as excinfo:
        risk_rig.put_policy(tenant, changed("/schema", "risk-policy.v2"))
    code, error = rpc.rpc_error(excinfo)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.error_code() == "RISK_POLICY_INVALID"
    assert [f.field for f in error.field_errors] == ["/schema"]
    # Still no policy: still fail closed.
    assert risk_rig.check_order(tenant).outcome == "POLICY_INVALID"

    first = risk_rig.put_policy(tenant, AGREED)
    with pytest.raises(grpc.RpcError):
        risk_rig.put_policy(tenant, changed("/limits/maxOrderNotional", "0"))
    active = risk_rig.risk.GetPolicy(risk_pb2.GetPolicyRequest(), metadata=rpc.metadata(tenant))
    assert (active.version, active.digest) == (first.version, first.digest)
    decision = risk_rig.check_order(tenant)
    assert decision.approved and decision.policy_version == "risk-policy.v1@1"


def test_versions_keep_digest_author_and_reason(risk_rig: RiskRig) -> None:
    tenant = new_tenant()
    first = risk_rig.put_policy(tenant, AGREED)
    second = risk_rig.put_policy(tenant, policy_doc(maxOrderQuantity="5"))
    assert (first.version, second.version) == (1, 2)
    assert first.digest == policy.digest(AGREED) != second.digest
    assert second.reason == "test limits"
    listing = risk_rig.risk.ListPolicyVersions(
        risk_pb2.ListPolicyVersionsRequest(), metadata=rpc.metadata(tenant)
    )
    assert [(v.version, v.active) for v in listing.versions] == [(2, True), (1, False)]
    assert json_format.MessageToDict(listing.versions[1].policy) == AGREED


def test_an_account_policy_overrides_the_tenant_policy_for_that_account(
    risk_rig: RiskRig,
) -> None:
    tenant = new_tenant()
    risk_rig.put_policy(tenant, AGREED)
    risk_rig.put_policy(tenant, policy_doc(maxOrderQuantity="1"), account="acc-small")
    small = risk_rig.check_order(tenant, account_id="acc-small", quantity="2")
    other = risk_rig.check_order(tenant, account_id="acc-other", quantity="2")
    assert (small.outcome, small.policy_version) == (
        "ORDER_QUANTITY_LIMIT",
        "risk-policy.v1/acc-small@1",
    )
    assert (other.outcome, other.policy_version) == ("APPROVED", "risk-policy.v1@1")


def test_only_a_risk_officer_may_put_a_policy(risk_rig: RiskRig) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        risk_rig.put_policy(new_tenant(), AGREED, roles=("trader",))
    assert rpc.rpc_error(excinfo)[1].error_code() == "FORBIDDEN"


def test_validate_is_a_dry_run(risk_rig: RiskRig) -> None:
    tenant = new_tenant()
    reply = risk_rig.risk.ValidatePolicy(
        risk_pb2.ValidatePolicyRequest(policy=struct(changed("/limits/extra", 1))),
        metadata=rpc.metadata(tenant),
    )
    assert not reply.valid and [p.path for p in reply.problems] == ["/limits/extra"]
    ok = risk_rig.risk.ValidatePolicy(
        risk_pb2.ValidatePolicyRequest(policy=struct(AGREED)), metadata=rpc.metadata(tenant)
    )
    assert ok.valid and ok.digest == policy.digest(AGREED)
    assert risk_rig.check_order(tenant).outcome == "POLICY_INVALID"


# -- through the gateway -------------------------------------------------------------------------


@pytest.fixture
def officer(live_stack: LiveStack):
    tenant = new_tenant("pol")
    with live_stack.client(live_stack.headers(tenant=tenant, user="olga")) as client:
        yield client


def test_gateway_put_get_and_versions(officer) -> None:
    put = officer.put("/v1/risk/policy", json={"policy": AGREED, "reason": "initial limits"})
    assert put.status_code == 200, put.text
    version = put.json()
    assert version["version"] == 1 and version["active"] is True
    assert (version["author"], version["reason"]) == ("olga", "initial limits")
    assert version["digest"] == policy.digest(AGREED)
    assert version["policy"] == AGREED
    assert officer.get("/v1/risk/policy").json() == version
    versions = officer.get("/v1/risk/policy/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1]


@pytest.mark.parametrize(
    "doc,fields",
    [
        (changed("/limits/unknownLimit", "1"), ["/limits/unknownLimit"]),
        (changed("/schema", "risk-policy.v2"), ["/schema"]),
        ({"limits": {}}, None),  # no schema at all: still RISK_POLICY_INVALID, never applied
    ],
    ids=["unknown-field", "schema-v2", "empty"],
)
def test_gateway_refuses_an_invalid_policy_and_keeps_the_previous_one(
    officer, doc: dict[str, Any], fields: list[str] | None
) -> None:
    first = officer.put("/v1/risk/policy", json={"policy": AGREED, "reason": "initial"}).json()
    response = officer.put("/v1/risk/policy", json={"policy": doc, "reason": "try this"})
    problem = assert_problem(response, 400, "RISK_POLICY_INVALID")
    listed = [e["field"] for e in problem["errors"]]
    if fields is not None:
        assert listed == fields
    else:
        assert {"/schema", "/limits/maxOrderNotional", "/killSwitch"} <= set(listed)
    assert "active policy is unchanged" in problem["detail"]
    active = officer.get("/v1/risk/policy").json()
    assert (active["version"], active["digest"]) == (first["version"], first["digest"])


def test_gateway_validate_reports_problems_without_applying(officer) -> None:
    bad = officer.post("/v1/risk/policy/validate", json={"policy": changed("/schema", "x")})
    assert bad.status_code == 200, bad.text
    assert bad.json()["valid"] is False
    assert [p["path"] for p in bad.json()["problems"]] == ["/schema"]
    good = officer.post("/v1/risk/policy/validate", json={"policy": AGREED}).json()
    assert good == {"valid": True, "problems": [], "digest": policy.digest(AGREED)}
    assert_problem(officer.get("/v1/risk/policy"), 404, "NOT_FOUND")


def test_gateway_per_account_policy(officer) -> None:
    officer.put("/v1/risk/policy", json={"policy": AGREED, "reason": "tenant-wide"})
    account = officer.put(
        "/v1/risk/policy",
        json={"policy": policy_doc(maxOrderQuantity="1"), "reason": "small", "accountId": "acc-s"},
    )
    assert account.status_code == 200, account.text
    assert account.json()["accountId"] == "acc-s"
    read = officer.get("/v1/risk/policy", params={"accountId": "acc-s"}).json()
    assert read["policy"]["limits"]["maxOrderQuantity"] == "1"
    # An account without its own policy reads the tenant-wide one.
    other = officer.get("/v1/risk/policy", params={"accountId": "acc-x"}).json()
    assert other["accountId"] == "" and other["version"] == 1


def test_gateway_only_risk_officers_put_policies(live_stack: LiveStack) -> None:
    tenant = new_tenant("pol")
    headers = live_stack.headers(tenant=tenant, roles=["viewer", "trader"])
    with live_stack.client(headers) as client:
        response = client.put("/v1/risk/policy", json={"policy": AGREED, "reason": "mine"})
        assert_problem(response, 403, "FORBIDDEN")
        # Validating is a read: any role may.
        assert client.post("/v1/risk/policy/validate", json={"policy": AGREED}).status_code == 200


def test_dev_up_seeds_the_documented_demo_policy_once(
    live_stack: LiveStack, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli import dev
    from cli.credentials import DEMO_ROLES, issue_credentials

    creds = issue_credentials(
        live_stack.settings(),
        api_base=live_stack.url,
        tenant_id=new_tenant("seed"),
        user_id="demo-user",
        roles=DEMO_ROLES,
        ttl_seconds=600,
        label="seed test",
    )
    dev.seed_demo_policy(creds)
    assert "risk policy   put cli/demo-risk-policy.json as version 1" in (
        capsys.readouterr().out.replace(str(ROOT) + "/", "")
    )
    dev.seed_demo_policy(creds)  # a restart keeps what is there
    assert "risk policy   kept active version 1" in capsys.readouterr().out
    with live_stack.client(live_stack.headers(tenant=creds.tenant_id)) as client:
        active = client.get("/v1/risk/policy").json()
    assert active["policy"] == DEMO_POLICY and active["author"] == "demo-user"
    assert active["reason"] == "gate4 dev up: documented demo default"
