"""Everything about Z.AI itself: its answers' codes, the account, the quota monitor's report."""
