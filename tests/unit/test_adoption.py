"""What is recorded about an adopted provider instance: name, spec and the legal path."""

from __future__ import annotations

from service.domain import Status
from service.novita import Instance as ProviderInstance
from service.provisioning.adoption import adopted_name, adopted_spec, adoption_path
from service.provisioning.status_map import Observation

ID = "inst_0123456789abcdef0123456789abcdef"
SUFFIX = "inst-0123456789abcdef0123456789abcdef"


def test_the_name_drops_our_id_suffix() -> None:
    assert adopted_name(f"lost-job-{SUFFIX}", ID) == "lost-job"
    assert adopted_name(SUFFIX, ID) == SUFFIX, "nothing else to call it"


def test_spec_takes_only_what_novita_says_and_sane_defaults() -> None:
    observed = ProviderInstance.model_validate(
        {"id": "n1", "name": f"x-{SUFFIX}", "gpuNum": "12", "billingMode": "", "clusterId": "c1"}
    )
    spec = adopted_spec(observed, ID)
    assert (spec.name, spec.gpu_num, spec.billing_mode, spec.region) == ("x", 1, "onDemand", "c1")
    assert spec.labels == {"adopted": "true"}


def test_path_from_provisioning_to_what_novita_reports() -> None:
    assert adoption_path(Observation("running")) == (Status.PROVISIONING, Status.RUNNING)
    assert adoption_path(Observation("exited")) == (Status.PROVISIONING, Status.STOPPED)
    assert adoption_path(Observation("pulling")) == (Status.PROVISIONING,)
    assert adoption_path(Observation("stopping")) == (Status.PROVISIONING,), "no legal way yet"
    assert adoption_path(Observation("Other")) == (Status.PROVISIONING,)
