"""Which webhook targets are refused, at request time (`check_webhook_target`)."""

from __future__ import annotations

import ipaddress

import pytest

from service.errors import DomainError, WebhookTargetRefusedError
from service.notifications.ssrf import address_refusal, check_webhook_target


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a public"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
    ],
)
def test_non_public_addresses_are_refused_with_the_reason(address: str, kind: str) -> None:
    reason = address_refusal(ipaddress.ip_address(address), allow_private=False)
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), allow_private=False) is None


def test_allowing_private_targets_still_refuses_cloud_metadata() -> None:
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    for metadata in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        reason = address_refusal(ipaddress.ip_address(metadata), allow_private=True)
        assert reason is not None and "metadata" in reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://10.0.0.1/hook", "private"),
        ("http://[::1]/hook", "loopback"),
        ("http://localhost:8080/hook", "loopback"),  # resolved: the name is no excuse
        ("ftp://example.com/hook", "only http"),
        ("file:///etc/passwd", "only http"),
        ("http:///no-host", "no host"),
    ],
)
async def test_check_refuses_with_a_domain_error_naming_the_reason(url: str, reason: str) -> None:
    with pytest.raises(WebhookTargetRefusedError, match=reason) as caught:
        await check_webhook_target(url, allow_private=False)
    assert isinstance(caught.value, DomainError)
    assert caught.value.code == "WEBHOOK_TARGET_REFUSED"


async def test_check_passes_public_literals_and_allowed_private_hosts() -> None:
    await check_webhook_target("https://93.184.216.34/hook", allow_private=False)
    await check_webhook_target("http://localhost:8080/hook", allow_private=True)
    with pytest.raises(WebhookTargetRefusedError, match="metadata"):
        await check_webhook_target("http://169.254.169.254/", allow_private=True)
