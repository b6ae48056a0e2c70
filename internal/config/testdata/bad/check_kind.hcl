module "cron" {
  kind  = "light"
  id    = 40
  nodes = ["node3"]

  check "errd" "crond" {
    when    = "second"
    action  = "swap"
    process = "crond"
  }

  check "splitbrain" "witness" {
    witnesses = ["198.18.0.254"]
  }

  check "errdd" "typo" {}
}
