module "pg" {
  kind            = "mirror"
  id              = 12
  nodes           = ["node1", "node2"]
  default_primary = "node1"

  vip {
    address = "198.18.0.100/24"
  }

  replication {
    dir "/var/lib/postgresql/15/main" {
      exclude    = ["pg_stat_tmp/*"]
      must_exist = ["PG_VERSION"]
    }
  }

  app {
    env = { PGDATA = "/var/lib/postgresql/15/main" }
  }

  check "errd" "postmaster" {
    process  = "postgres"
    at_least = 1
  }
}
