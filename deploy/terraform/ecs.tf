# The ECS Fargate service: the project's image, its SWITCHBOARD_* settings, both secrets, logs to CloudWatch.

resource "aws_ecs_cluster" "switchboard" {
  name = var.name
  tags = local.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_iam_role" "execution" {
  name_prefix = "${var.name}-exec-"
  description = "Pulls the Switchboard image, writes its logs, reads its secrets"
  tags        = local.tags
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "execution_secrets" {
  name = "read-switchboard-secrets"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [
        {
          Effect = "Allow"
          Action = "secretsmanager:GetSecretValue"
          Resource = concat(
            aws_secretsmanager_secret.redis_auth[*].arn,
            [aws_secretsmanager_secret.management_token.arn],
            [for arn in values(var.secrets) : arn if startswith(split(":", arn)[2], "secretsmanager")],
          )
        },
        {
          Effect   = "Allow"
          Action   = "kms:Decrypt"
          Resource = aws_kms_key.switchboard.arn
        },
      ],
      length([for arn in values(var.secrets) : arn if split(":", arn)[2] == "ssm"]) == 0 ? [] : [{
        Effect   = "Allow"
        Action   = "ssm:GetParameters"
        Resource = [for arn in values(var.secrets) : arn if split(":", arn)[2] == "ssm"]
      }],
    )
  })
}

# The tasks call no AWS API: the role exists so that nothing inherits the execution role's rights.
resource "aws_iam_role" "task" {
  name_prefix = "${var.name}-task-"
  description = "Switchboard tasks (no permissions)"
  tags        = local.tags
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

locals {
  container_environment = merge(var.environment, {
    SWITCHBOARD_REDIS_URL             = local.redis_url
    SWITCHBOARD_REDIS_MODE            = local.redis_mode
    SWITCHBOARD_DRAIN_DELAY           = "${var.drain_delay}s"
    SWITCHBOARD_DRAIN_GRACE_PERIOD    = "${var.drain_grace_period}s"
    SWITCHBOARD_METRICS_EMF_INTERVAL  = local.emf_interval
    SWITCHBOARD_METRICS_EMF_SERVICE   = local.emf_service
    SWITCHBOARD_MANAGEMENT_PORT       = tostring(var.management_port)
  })
  # With redis_url the module has no Redis secret: var.secrets may carry SWITCHBOARD_REDIS_PASSWORD instead.
  container_secrets = merge(var.secrets, { for name, arn in {
    SWITCHBOARD_REDIS_PASSWORD          = one(aws_secretsmanager_secret.redis_auth[*].arn)
    SWITCHBOARD_MANAGEMENT_BEARER_TOKEN = aws_secretsmanager_secret.management_token.arn
  } : name => arn if name != "SWITCHBOARD_REDIS_PASSWORD" || local.create_redis })
}

resource "aws_ecs_task_definition" "switchboard" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  tags                     = local.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name                   = local.container_name
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true # the binary writes nothing but stdout and stderr
    portMappings = [
      { containerPort = local.container_port, protocol = "tcp" },
      { containerPort = var.management_port, protocol = "tcp" },
    ]
    environment = [for key in sort(keys(local.container_environment)) : { name = key, value = local.container_environment[key] }]
    secrets     = [for key in sort(keys(local.container_secrets)) : { name = key, valueFrom = local.container_secrets[key] }]
    ulimits     = [{ name = "nofile", softLimit = local.nofile_limit, hardLimit = local.nofile_limit }]
    stopTimeout = local.stop_timeout_seconds
    healthCheck = {
      command     = ["CMD", "/app/switchboard", "health"]
      interval    = 10
      timeout     = 5
      retries     = 3
      startPeriod = 10
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.switchboard.name
        "awslogs-region"        = local.region
        "awslogs-stream-prefix" = "switchboard"
      }
    }
  }])

  lifecycle {
    precondition {
      condition     = var.drain_delay + var.drain_grace_period < local.stop_timeout_seconds
      error_message = "drain_delay + drain_grace_period must be under the 30 s stop timeout, or ECS kills tasks before their $disconnect integrations have run."
    }
    # Which Redis (redis.tf): the combinations that name two at once. (Validation blocks may not read other
    # variables before Terraform 1.9, so these are preconditions: `terraform plan` stops on them all the same.)
    precondition {
      condition     = !(var.redis_cluster_mode && var.redis_serverless)
      error_message = "redis_cluster_mode and redis_serverless both ask for a new Redis: set one (cluster-mode replication group or ElastiCache Serverless)."
    }
    precondition {
      condition     = var.redis_url == null || !(var.redis_cluster_mode || var.redis_serverless)
      error_message = "redis_url points the tasks at an existing cache and creates none: leave redis_cluster_mode and redis_serverless false with it."
    }
    precondition {
      condition     = var.redis_mode == null || var.redis_url != null
      error_message = "redis_mode goes with redis_url; for the caches the module creates it is set to match them (cluster for redis_cluster_mode and redis_serverless)."
    }
  }
}

resource "aws_ecs_service" "switchboard" {
  name                              = var.name
  cluster                           = aws_ecs_cluster.switchboard.id
  task_definition                   = aws_ecs_task_definition.switchboard.arn
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  desired_count                     = var.desired_count
  health_check_grace_period_seconds = local.health_check_grace_seconds
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  propagate_tags                     = "SERVICE"
  tags                               = local.tags

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.public.arn
    container_name   = local.container_name
    container_port   = local.container_port
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.management.arn
    container_name   = local.container_name
    container_port   = var.management_port
  }

  lifecycle {
    ignore_changes = [desired_count] # autoscaling owns it after the first deployment
  }

  depends_on = [aws_lb_listener.public, aws_lb_listener.management, aws_iam_role_policy.execution_secrets]
}
