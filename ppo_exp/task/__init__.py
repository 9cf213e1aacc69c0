"""The embedded offline task: review prompts (`prompts`), the tiny base model they train
(`base_model`), and the reward functions (`rewards`)."""
