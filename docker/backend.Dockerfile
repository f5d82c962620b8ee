# syntax=docker/dockerfile:1
#
# The backend: the official php:8.3-apache-bookworm image (Apache 2.4, prefork, mod_php; the
# version pinned, the same Debian release as the front's image),
# set up as khttpd-front's userspace backend. Build context = docker/:
#   docker build -f docker/backend.Dockerfile -t khttpd-backend docker
#
# How Apache behaves comes from apache/khttpd-backend.conf, the same file the
# end-to-end tests Include (tests/src/apache.rs), so the tests exercise these
# settings. apache/docker.conf holds only what the tests generate on their own:
# the port, the DocumentRoot, the trusted proxies, the log.
FROM php:8.3-apache-bookworm

# 8080, as on a host where khttpd-front owns port 80. The image's default site
# (port 80, /var/www/html) and its %h-based per-vhost log are switched off; our
# own log line records the client address mod_remoteip restored.
RUN a2enmod include remoteip \
 && sed -ri 's/^Listen 80$/Listen 8080/' /etc/apache2/ports.conf \
 && grep -qx 'Listen 8080' /etc/apache2/ports.conf \
 && a2dissite 000-default \
 && a2disconf other-vhosts-access-log

COPY apache/khttpd-backend.conf /etc/apache2/conf-available/khttpd-backend.conf
COPY apache/docker.conf /etc/apache2/conf-available/khttpd-docker.conf
RUN a2enconf khttpd-backend khttpd-docker

# The network the front connects from: its X-Forwarded-For is believed only
# from there. compose.yaml sets it to the subnet of its own network.
ENV KHTTPD_FRONT_NET=127.0.0.0/8

EXPOSE 8080
# Any HTTP answer means Apache and mod_php are up, whatever the site's own
# index returns (curl is part of the php images).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD curl -sS -o /dev/null --max-time 3 http://127.0.0.1:8080/ || exit 1
