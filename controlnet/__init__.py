"""Stable Cascade ControlNets in pure PyTorch: the network, what a file holds, and each use's control input."""
