module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  replication {
    dir "var/lib/pg" {}
    dir "/" {}
    dir "/srv/../etc" {}
    dir "/srv/data" {
      exclude    = ["/abs/*", "[unclosed"]
      must_exist = ["../outside", "PG_VERSION"]
    }
  }
}
