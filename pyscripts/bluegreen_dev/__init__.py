"""Development only: the private sandbox (dockerd, Consul, nginx), the demo, sample images, the
Swarm lab and the Consul cluster that the tests, the benchmarks and the demo use. Not the product."""
