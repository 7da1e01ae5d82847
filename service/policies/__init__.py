"""Cost policies as pure decisions: when an idle instance stops, how a reclaimed spot
instance recovers. The policy worker (`service.workers.policy`) acts on them."""
