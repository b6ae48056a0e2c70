module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  app {
    scripts      = "/etc/halo/scripts"
    start_timout = "60s"
    stop_timeout = "0s"
    env = {
      "1BAD"     = "x"
      HALO_STATE = "y"
      PGDATA     = "/var/lib/pg"
      PGDATA     = "/srv/pg"
    }
  }
}
