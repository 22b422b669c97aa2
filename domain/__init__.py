"""The loyalty domain: members, points, growth, tiers. Knows nothing of Telegram or HTTP."""
