# The metrics listener: its networks must be declared and listed once,
# its port must not be another of the cluster's, and one block only.
cluster "metrics" {
  api_port = 9453
  network "default" {}
  network "replication" {}
  node "node1" {
    addresses = { default = "198.18.0.1", replication = "198.18.1.1" }
  }
  metrics {
    port     = 9453
    networks = ["default", "backup", "default"]
  }
  metrics {
    port = 9464
  }
}
