# A metrics block without a port, listening nowhere.
cluster "metrics" {
  network "default" {}
  node "node1" {
    addresses = { default = "198.18.0.1" }
  }
  metrics {
    networks = []
  }
}
