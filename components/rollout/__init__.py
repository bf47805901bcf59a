"""The rollout step: a canary of the new version, analysed and promoted or rolled back."""
