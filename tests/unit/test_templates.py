"""Merging a Novita template with the client's request (docs/architecture.md)."""

from __future__ import annotations

from service.novita import Template
from service.provisioning.templates import merge_envs, merge_ports, merge_template

TEMPLATE = Template.model_validate(
    {
        "Id": "212",
        "image": "pytorch/pytorch:2.4",
        "imageAuth": "auth-1",
        "ports": [{"type": "http", "ports": [8888, 6006]}, {"type": "tcp", "ports": [22]}],
        "envs": [{"key": "JUPYTER_TOKEN", "value": "tpl"}, {"key": "HF_HOME", "value": "/hf"}],
        "rootfsSize": 60,
        "startCommand": "jupyter lab",
        "minCudaVersion": "12.4",
    }
)


def test_ports_are_a_union_and_the_request_type_wins() -> None:
    merged = merge_ports(
        [{"port": 8888, "type": "http"}, {"port": 22, "type": "tcp"}],
        [{"port": 22, "type": "http"}, {"port": 9000, "type": "tcp"}],
    )
    assert merged == (
        {"port": 8888, "type": "http"},
        {"port": 22, "type": "http"},
        {"port": 9000, "type": "tcp"},
    )


def test_envs_are_merged_over_the_template_by_key() -> None:
    merged = merge_envs(
        [{"key": "A", "value": "1"}, {"key": "B", "value": "2"}],
        [{"key": "B", "value": "two"}, {"key": "C", "value": "3"}],
    )
    assert merged == (
        {"key": "A", "value": "1"},
        {"key": "B", "value": "two"},
        {"key": "C", "value": "3"},
    )


def test_template_fills_what_the_request_leaves_out() -> None:
    launch = merge_template(
        TEMPLATE,
        image_url=None,
        image_auth_id=None,
        ports=[{"port": 6006, "type": "tcp"}],
        envs=[{"key": "JUPYTER_TOKEN", "value": "mine"}],
        rootfs_size=None,
    )
    assert launch.image_url == "pytorch/pytorch:2.4"
    assert launch.image_auth_id == "auth-1"  # travels with the template's image
    assert launch.ports == (
        {"port": 8888, "type": "http"},
        {"port": 6006, "type": "tcp"},
        {"port": 22, "type": "tcp"},
    )
    assert launch.envs == (
        {"key": "JUPYTER_TOKEN", "value": "mine"},
        {"key": "HF_HOME", "value": "/hf"},
    )
    assert launch.rootfs_size == 60
    assert (launch.command, launch.min_cuda_version) == ("jupyter lab", "12.4")


def test_request_image_wins_and_drops_the_template_registry_auth() -> None:
    launch = merge_template(
        TEMPLATE, image_url="me/own:1", image_auth_id=None, ports=(), envs=(), rootfs_size=100
    )
    assert launch.image_url == "me/own:1"
    assert launch.image_auth_id is None
    assert launch.rootfs_size == 100


def test_request_registry_auth_is_passed_through() -> None:
    launch = merge_template(
        TEMPLATE, image_url="me/own:1", image_auth_id="mine", ports=(), envs=(), rootfs_size=None
    )
    assert launch.image_auth_id == "mine"


def test_without_template_the_request_is_used_as_is() -> None:
    launch = merge_template(
        None,
        image_url="me/own:1",
        image_auth_id=None,
        ports=[{"port": 80, "type": "http"}],
        envs=[{"key": "K", "value": "v"}],
        rootfs_size=None,
    )
    assert launch.image_url == "me/own:1"
    assert launch.ports == ({"port": 80, "type": "http"},)
    assert launch.envs == ({"key": "K", "value": "v"},)
    assert launch.rootfs_size is None and launch.command is None
