# Security groups: clients -> load balancer 443; load balancer -> tasks 8080; internal management load balancer ->
# tasks management_port; tasks -> Redis 6379 and HTTPS (ECR, CloudWatch Logs, Secrets Manager, HTTPS integrations).
# Nothing else. Rules are separate resources, so the groups can name each other. With redis_url (a cache the module
# does not create) there is no Redis group: open the path to it yourself (task_security_group_id and your cache's group).

locals {
  management_cidr_blocks = var.management_cidr_blocks == null ? [data.aws_vpc.this.cidr_block] : var.management_cidr_blocks
}

resource "aws_security_group" "load_balancer" {
  name_prefix = "${var.name}-lb-"
  description = "Switchboard load balancer: TLS from clients, to the tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each          = toset(var.client_cidr_blocks)
  security_group_id = aws_security_group.load_balancer.id
  description       = "WebSocket clients (wss://)"
  ip_protocol       = "tcp"
  from_port         = local.public_port
  to_port           = local.public_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "load_balancer_to_tasks" {
  security_group_id            = aws_security_group.load_balancer.id
  description                  = "To the tasks' WebSocket port"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_security_group" "management" {
  name_prefix = "${var.name}-mgmt-"
  description = "Switchboard internal management load balancer: management API from inside the VPC"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "management_cidrs" {
  for_each          = toset(local.management_cidr_blocks)
  security_group_id = aws_security_group.management.id
  description       = "Management API callers"
  ip_protocol       = "tcp"
  from_port         = var.management_port
  to_port           = var.management_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "management_groups" {
  for_each                     = toset(var.management_security_group_ids)
  security_group_id            = aws_security_group.management.id
  description                  = "Management API callers"
  ip_protocol                  = "tcp"
  from_port                    = var.management_port
  to_port                      = var.management_port
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_egress_rule" "management_to_tasks" {
  security_group_id            = aws_security_group.management.id
  description                  = "To the tasks' management port"
  ip_protocol                  = "tcp"
  from_port                    = var.management_port
  to_port                      = var.management_port
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-tasks-"
  description = "Switchboard tasks: WebSocket and management ports through their load balancers only"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_load_balancer" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "WebSocket and /health from the public load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.load_balancer.id
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_management" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "Management API and /health from the internal load balancer"
  ip_protocol                  = "tcp"
  from_port                    = var.management_port
  to_port                      = var.management_port
  referenced_security_group_id = aws_security_group.management.id
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS: ECR, CloudWatch Logs, Secrets Manager, HTTPS integrations"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

moved {
  from = aws_vpc_security_group_egress_rule.tasks_to_redis
  to   = aws_vpc_security_group_egress_rule.tasks_to_redis[0]
}

moved {
  from = aws_security_group.redis
  to   = aws_security_group.redis[0]
}

moved {
  from = aws_vpc_security_group_ingress_rule.redis_from_tasks
  to   = aws_vpc_security_group_ingress_rule.redis_from_tasks[0]
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_redis" {
  count                        = local.create_redis ? 1 : 0
  security_group_id            = aws_security_group.tasks.id
  description                  = "Redis"
  ip_protocol                  = "tcp"
  from_port                    = local.redis_port
  to_port                      = local.redis_port
  referenced_security_group_id = aws_security_group.redis[0].id
}

resource "aws_security_group" "redis" {
  count       = local.create_redis ? 1 : 0
  name_prefix = "${var.name}-redis-"
  description = "Switchboard Redis: port 6379 from the tasks only"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_tasks" {
  count                        = local.create_redis ? 1 : 0
  security_group_id            = aws_security_group.redis[0].id
  description                  = "Redis from the Switchboard tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.redis_port
  to_port                      = local.redis_port
  referenced_security_group_id = aws_security_group.tasks.id
}
