"""Measuring deployments: the profiler (`profile`, run model by model in isolated `worker` processes),
its reports and plots (`report`), each runtime's peak convolution speed (`peak`), the machine's
description (`machine`), parameter counts read from artifact files (`params`), Raspberry Pi bundles
(`bundle`: what a bundle holds and how a board opens it; `bundle_builder`: making one on x86), and
ARM emulation (`emulation`). Profiling a bundle imports no torch.

May import: everything below it, `toolkit.deploy` included, and the top-level `profiles`.
"""
