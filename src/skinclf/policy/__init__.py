"""The post-hoc policy, fitted on held-out predictions (torch-free): the temperature, the
SGR or coverage confidence gate, the OOD gate and its choice, as one `SelectivePolicy`."""
