# Switchboard on ECS Fargate: the resources of deploy/aws/switchboard-{alb,nlb}.yaml, as a module.

locals {
  # What the image and the CloudFormation templates fix; test_terraform.py compares these with the templates.
  container_name               = "switchboard"
  container_port               = 8080
  health_check_path            = "/health"
  health_check_interval        = 10
  healthy_threshold            = 2
  unhealthy_threshold          = 2
  deregistration_delay_seconds = 30 # the load balancer's drain: drain_delay + drain_grace_period fit in it
  stop_timeout_seconds         = 30 # ECS's SIGTERM-to-SIGKILL time: the same
  health_check_grace_seconds   = 30
  redis_port                   = 6379
  nofile_limit                 = 65536
  public_port                  = 443
  ssl_policy                   = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  emf_interval                 = "60s"
  emf_namespace                = "Switchboard" # what Gateway.startEmbeddedMetrics prints
  emf_metric                   = "ActiveConnections"
  emf_dimension                = "ServiceName"
  scale_in_cooldown            = 300
  scale_out_cooldown           = 60

  alb         = var.load_balancer_type == "application"
  emf_service = var.name
  log_group   = "/ecs/${var.name}/switchboard"

  # Region, account and partition from the key's ARN: no data source whose attributes differ between provider majors.
  arn_parts = split(":", aws_kms_key.switchboard.arn)
  partition = local.arn_parts[1]
  region    = local.arn_parts[3]
  account   = local.arn_parts[4]

  tags = merge({ "app" = "switchboard" }, var.tags)
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

# One customer-managed key for the log group, both secrets and Redis at rest, rotated yearly.
resource "aws_kms_key" "switchboard" {
  description             = "Switchboard ${var.name}: logs, secrets, Redis at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  tags                    = local.tags
}

resource "aws_kms_key_policy" "switchboard" {
  key_id = aws_kms_key.switchboard.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # The account's IAM policies decide (the deploying role for ElastiCache and Secrets Manager, the
        # execution role for reading the secrets).
        Sid       = "AccountIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsForThisLogGroup"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnEquals = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:${local.log_group}" }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "switchboard" {
  name          = "alias/${var.name}-switchboard"
  target_key_id = aws_kms_key.switchboard.key_id
}

resource "aws_cloudwatch_log_group" "switchboard" {
  name              = local.log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.switchboard.arn
  tags              = local.tags

  depends_on = [aws_kms_key_policy.switchboard]
}

# The Redis AUTH token (the Serverless cache's user password) and the management bearer token: generated once by
# Secrets Manager, kept in it, injected into the tasks by ECS. (The Redis one is also in the Terraform state, as
# ElastiCache needs it: keep the state encrypted.) With redis_url there is no Redis secret: give the cache's own as
# secrets = { SWITCHBOARD_REDIS_PASSWORD = ARN }.
data "aws_secretsmanager_random_password" "redis_auth" {
  count               = local.create_redis ? 1 : 0
  password_length     = 48
  exclude_punctuation = true
}

data "aws_secretsmanager_random_password" "management_token" {
  password_length     = 48
  exclude_punctuation = true
}

moved {
  from = aws_secretsmanager_secret.redis_auth
  to   = aws_secretsmanager_secret.redis_auth[0]
}

moved {
  from = aws_secretsmanager_secret_version.redis_auth
  to   = aws_secretsmanager_secret_version.redis_auth[0]
}

resource "aws_secretsmanager_secret" "redis_auth" {
  #checkov:skip=CKV2_AWS_57:Rotating the Redis AUTH token is ElastiCache's ROTATE strategy (Serverless: a second user password) plus a task restart; no rotation Lambda does it, so it is rotated by hand (docs/deploy.md)
  count                   = local.create_redis ? 1 : 0
  name_prefix             = "${var.name}-redis-auth-"
  description             = "Switchboard Redis AUTH token (Serverless: the default user's password)"
  kms_key_id              = aws_kms_key.switchboard.arn
  recovery_window_in_days = 7
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "redis_auth" {
  count         = local.create_redis ? 1 : 0
  secret_id     = aws_secretsmanager_secret.redis_auth[0].id
  secret_string = data.aws_secretsmanager_random_password.redis_auth[0].random_password

  lifecycle {
    ignore_changes = [secret_string] # the data source draws a new one on every plan; the first one stays
  }
}

resource "aws_secretsmanager_secret" "management_token" {
  #checkov:skip=CKV2_AWS_57:The bearer token is shared with the backends that call the management API; rotating it needs them updated too, so it is rotated by hand (docs/deploy.md)
  name_prefix             = "${var.name}-management-token-"
  description             = "Bearer token of the Switchboard management API"
  kms_key_id              = aws_kms_key.switchboard.arn
  recovery_window_in_days = 7
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "management_token" {
  secret_id     = aws_secretsmanager_secret.management_token.id
  secret_string = data.aws_secretsmanager_random_password.management_token.random_password

  lifecycle {
    ignore_changes = [secret_string]
  }
}
