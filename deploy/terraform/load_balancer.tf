# The public load balancer (ALB or NLB, var.load_balancer_type) and the internal one for the management API.

resource "aws_lb" "public" {
  #checkov:skip=CKV2_AWS_28:WAF inspects HTTP requests, and a WebSocket is one upgrade request followed by frames it never sees; attach a web ACL to this ALB from the root module if the upgrade requests need filtering
  #checkov:skip=CKV_AWS_91:Access logs need an S3 bucket with an ELB bucket policy, which this module does not own: pass access_logs_bucket to turn them on; every connection is logged by the tasks in CloudWatch Logs either way
  name                             = "${var.name}-${local.alb ? "alb" : "nlb"}"
  load_balancer_type               = var.load_balancer_type
  internal                         = false
  subnets                          = var.public_subnet_ids
  security_groups                  = [aws_security_group.load_balancer.id]
  idle_timeout                     = local.alb ? var.idle_timeout_seconds : null
  drop_invalid_header_fields       = local.alb ? true : null
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  tags                             = local.tags

  dynamic "access_logs" {
    for_each = var.access_logs_bucket == null ? [] : [var.access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "public" {
  #checkov:skip=CKV_AWS_378:The load balancer terminates TLS; the hop to the tasks stays in the VPC's private subnets, on a port only the load balancer's security group reaches, and the tasks hold no certificate
  name                 = "${var.name}-ws"
  vpc_id               = var.vpc_id
  port                 = local.container_port
  protocol             = local.alb ? "HTTP" : "TCP"
  target_type          = "ip"
  deregistration_delay = local.deregistration_delay_seconds
  # NLB: connections are not cut at the end of the delay; the task has closed them (1001) within its drain by then.
  connection_termination = local.alb ? null : false
  preserve_client_ip     = local.alb ? null : true
  tags                   = local.tags

  health_check {
    protocol            = "HTTP"
    path                = local.health_check_path
    interval            = local.health_check_interval
    healthy_threshold   = local.healthy_threshold
    unhealthy_threshold = local.unhealthy_threshold
  }

  # No stickiness: any task serves any client (rooms and users are shared through Redis).
  dynamic "stickiness" {
    for_each = local.alb ? [1] : []
    content {
      type    = "lb_cookie"
      enabled = false
    }
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "public" {
  load_balancer_arn = aws_lb.public.arn
  port              = local.public_port
  protocol          = local.alb ? "HTTPS" : "TLS"
  ssl_policy        = local.ssl_policy
  certificate_arn   = var.certificate_arn
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.public.arn
  }
}

# The management API (@connections, @rooms, /metrics, the dashboard) on management_port, reachable only inside the
# VPC through this internal NLB: the public load balancer forwards 8080 only, where the tasks answer it with 404.
resource "aws_lb" "management" {
  #checkov:skip=CKV_AWS_91:Internal management traffic only; the management API's requests are in the tasks' logs
  name                             = "${var.name}-mgmt"
  load_balancer_type               = "network"
  internal                         = true
  subnets                          = var.private_subnet_ids
  security_groups                  = [aws_security_group.management.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  tags                             = local.tags
}

resource "aws_lb_target_group" "management" {
  name                   = "${var.name}-mgmt"
  vpc_id                 = var.vpc_id
  port                   = var.management_port
  protocol               = "TCP"
  target_type            = "ip"
  deregistration_delay   = local.deregistration_delay_seconds
  connection_termination = true
  tags                   = local.tags

  health_check {
    protocol            = "HTTP"
    path                = local.health_check_path
    interval            = local.health_check_interval
    healthy_threshold   = local.healthy_threshold
    unhealthy_threshold = local.unhealthy_threshold
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "management" {
  load_balancer_arn = aws_lb.management.arn
  port              = var.management_port
  protocol          = var.management_certificate_arn == null ? "TCP" : "TLS"
  ssl_policy        = var.management_certificate_arn == null ? null : local.ssl_policy
  certificate_arn   = var.management_certificate_arn
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.management.arn
  }
}
