"""The simulated model (`heavyresearch sim-llm`): an OpenAI-compatible server playing a
deterministic research policy, with latency and fault knobs. A SIMULATION for tests, demos and
benchmarks; never a real language model.
"""

from workers.sim.app import MODEL_ID, SimStats, create_app
from workers.sim.faults import SimConfig
from workers.sim.policy import count_tokens
from workers.sim.server import SimServer, serve

__all__ = ["MODEL_ID", "SimConfig", "SimServer", "SimStats", "count_tokens", "create_app", "serve"]
