"""Provisioning logic kept apart from the workers: pure selection, status mapping, naming and
template merging, plus the small in-memory caches the provisioner uses."""
