# Example cluster the shipped modules are validated against.
#
#   halo validate modules/            # uses this file (a cluster.hcl in the given directory)
#   halo validate --cluster /etc/halo/cluster.hcl modules/generic
#
# Your real cluster file is /etc/halo/cluster.hcl, the same on every node.
# Addresses here are from 198.18.0.0/15 (reserved for testing).
cluster "example" {
  api_port    = 9453 # agent API and web console (HTTPS)
  health_port = 9010 # GET /health/<module> for cloud load balancers

  # Heartbeats go over every network both nodes of a mirror share: a
  # dedicated replication link keeps the pair together if the LAN fails.
  network "default" {}
  network "replication" {}

  node "node1" {
    addresses = { default = "198.18.0.1", replication = "198.18.1.1" }
  }
  node "node2" {
    addresses = { default = "198.18.0.2", replication = "198.18.1.2" }
  }
  node "node3" {
    addresses = { default = "198.18.0.3" }
  }

  # Console and API users. Without password_hash a user signs in with a
  # client certificate whose common name is the user's name.
  user "admin" {
    role = "admin"
  }
}
