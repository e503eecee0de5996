# FastGateway build. `make` builds ./fastgateway; `make test` runs unit and integration tests.
# Sources are found by wildcard: a new module is a new .c/.h pair in its folder.

CC       ?= cc
PREFIX   ?= /usr/local
DESTDIR  ?=
SANITIZE ?=
PYTHON   ?= /usr/bin/python3
VERSION  := 0.1.0

PKGS     := libevent libevent_openssl openssl libnghttp2 jansson zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= -O2 -g
WARN     := -std=c11 -Wall -Wextra -Werror -Wstrict-prototypes -Wshadow -Wno-unused-parameter
CPPFLAGS += -D_GNU_SOURCE -DFG_VERSION=\"$(VERSION)\" -I. $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lpthread

ifneq ($(SANITIZE),)
  CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -O1
  LDFLAGS += -fsanitize=$(SANITIZE)
  BUILD   ?= build/san
else
  BUILD   ?= build/rel
endif

SRCS     := $(wildcard common/*.c shm/*.c tables/*.c worker/*/*.c master/*.c)
MAIN_SRC := master/main.c
LIB_SRCS := $(filter-out $(MAIN_SRC),$(SRCS))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(MAIN_SRC:%.c=$(BUILD)/%.o)
DEPS     := $(SRCS:%.c=$(BUILD)/%.d)

# The tunnel agent (agent/): its own modules on top of the gateway's library.
AGENT_SRCS := $(wildcard agent/*.c)
AGENT_MAIN := agent/main.c
AGENT_LIB_OBJS := $(filter-out $(AGENT_MAIN:%.c=$(BUILD)/%.o),$(AGENT_SRCS:%.c=$(BUILD)/%.o))
DEPS     += $(AGENT_SRCS:%.c=$(BUILD)/%.d)

# The test build: the same sources with -DFG_TEST_HOOKS, which compiles in the fault-injection
# hooks some integration tests use (docs/operations.md). Only build/test/fastgateway has them.
HOOK_OBJS := $(SRCS:%.c=$(BUILD)/hooks/%.o)
DEPS      += $(HOOK_OBJS:.o=.d)

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_TIME ?= 30

.PHONY: all deps run test unit integration fuzz bench install lint format clean example-certs

all: fastgateway fastgateway-agent

# Always refreshed, so that switching between SANITIZE builds never leaves a stale binary.
# Copied then renamed: a running binary is replaced, never written over ("text file busy").
fastgateway: $(BUILD)/fastgateway FORCE
	@cmp -s $< $@ || { cp $< $@.new && mv -f $@.new $@; }

FORCE:

$(BUILD)/fastgateway: $(MAIN_OBJ) $(BUILD)/libfg.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

fastgateway-agent: $(BUILD)/fastgateway-agent FORCE
	@cmp -s $< $@ || { cp $< $@.new && mv -f $@.new $@; }

# AGENT_OPENSSL=static links libssl.a and libcrypto.a into fastgateway-agent: about 0.75 MB less
# idle VmRSS (no relocation of the whole shared libcrypto, only the code the agent uses), but
# the agent must then be rebuilt for every OpenSSL security release (docs/tunnels.md, Memory).
AGENT_OPENSSL ?= shared
ifeq ($(AGENT_OPENSSL),static)
  AGENT_LDLIBS := $(filter-out -lssl -lcrypto -lz,$(LDLIBS)) -Wl,-Bstatic -lssl -lcrypto -Wl,-Bdynamic
else
  AGENT_LDLIBS := $(filter-out -lz,$(LDLIBS))
endif
# The agent serves no compression (its workers have no filter_response): no zlib.
AGENT_STAMP := $(BUILD)/agent-openssl-$(AGENT_OPENSSL)

$(AGENT_STAMP):
	@mkdir -p $(@D) && rm -f $(BUILD)/agent-openssl-* && touch $@

$(BUILD)/fastgateway-agent: $(BUILD)/agent/main.o $(BUILD)/libfgagent.a $(BUILD)/libfg.a $(AGENT_STAMP)
	$(CC) $(LDFLAGS) -o $@ $(filter-out $(AGENT_STAMP),$^) $(AGENT_LDLIBS)

$(BUILD)/libfgagent.a: $(AGENT_LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libfg.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -MMD -MP -c -o $@ $<

build/test/fastgateway: $(BUILD)/hooks/fastgateway FORCE
	@mkdir -p $(dir $@)
	@cmp -s $< $@ || cp $< $@

$(BUILD)/hooks/fastgateway: $(HOOK_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/hooks/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DFG_TEST_HOOKS $(CFLAGS) $(WARN) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libfg.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< $(BUILD)/libfg.a $(LDLIBS) -lcmocka

# The agent's unit tests link its modules too (the shorter stem wins over the rule above).
$(BUILD)/tests/test_agent_%: tests/unit/test_agent_%.c $(BUILD)/libfgagent.a $(BUILD)/libfg.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) $(LDFLAGS) -o $@ $< $(BUILD)/libfgagent.a \
	  $(BUILD)/libfg.a $(LDLIBS) -lcmocka

deps:
	@scripts/install-deps.sh

run: deps fastgateway
	./fastgateway -f -c etc/fastgateway.json

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: fastgateway fastgateway-agent build/test/fastgateway
	$(PYTHON) -m pytest -q tests/integration

test: deps
	$(MAKE) fastgateway fastgateway-agent unit
	$(MAKE) integration

build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS)
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $< $(LIB_SRCS) $(LDLIBS)

fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p build/corpus/$$n; \
	  echo "== $$n ($(FUZZ_TIME)s)"; $$f -max_total_time=$(FUZZ_TIME) -max_len=8192 build/corpus/$$n tests/fuzz/corpus/$$n 2>&1 | tail -3; done

bench: deps fastgateway
	scripts/bench.sh

# Self-signed certificates for the examples (untracked): an ECDSA P-256 CA, a server
# certificate for localhost, 127.0.0.1 and *.example.test signed by it, and a client certificate
# for mutual TLS; for OCSP stapling, the server's chain with the CA and an OCSP response for it
# signed by the CA, valid 30 days. Files that exist are kept, so running it again changes
# nothing (delete server.ocsp to make a fresh response).
CERTS_DIR := etc/examples/certs
example-certs: $(CERTS_DIR)/server.crt $(CERTS_DIR)/client.crt $(CERTS_DIR)/server.ocsp

$(CERTS_DIR)/ca.crt:
	@mkdir -p $(CERTS_DIR)
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
	  -days 3650 -subj "/CN=FastGateway Example CA" -keyout $(CERTS_DIR)/ca.key -out $@ \
	  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

# $(call leaf_cert,NAME,SUBJECT,EXTENSIONS): a key and a certificate signed by the example CA.
define leaf_cert
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -subj "$(2)" \
	  -keyout $(CERTS_DIR)/$(1).key -out $(CERTS_DIR)/$(1).csr
	printf '%s\n' $(3) > $(CERTS_DIR)/$(1).ext
	openssl x509 -req -in $(CERTS_DIR)/$(1).csr -CA $(CERTS_DIR)/ca.crt \
	  -CAkey $(CERTS_DIR)/ca.key -CAcreateserial -CAserial $(CERTS_DIR)/ca.srl -days 825 \
	  -sha256 -extfile $(CERTS_DIR)/$(1).ext -out $(CERTS_DIR)/$(1).crt
	@rm -f $(CERTS_DIR)/$(1).csr $(CERTS_DIR)/$(1).ext
endef

SERVER_EXT := "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:*.example.test" \
	"extendedKeyUsage=serverAuth"
CLIENT_EXT := "extendedKeyUsage=clientAuth"

$(CERTS_DIR)/server.crt: $(CERTS_DIR)/ca.crt
	$(call leaf_cert,server,/CN=localhost,$(SERVER_EXT))

$(CERTS_DIR)/client.crt: $(CERTS_DIR)/ca.crt
	$(call leaf_cert,client,/CN=FastGateway Example Client,$(CLIENT_EXT))

# openssl ocsp answers the request it builds for server.crt from a one-line index of the CA.
$(CERTS_DIR)/server.ocsp: $(CERTS_DIR)/server.crt
	cat $(CERTS_DIR)/server.crt $(CERTS_DIR)/ca.crt > $(CERTS_DIR)/server-chain.crt
	printf 'V\t391231235959Z\t\t%s\tunknown\t/CN=localhost\n' \
	  "$$(openssl x509 -in $(CERTS_DIR)/server.crt -noout -serial | cut -d= -f2)" \
	  > $(CERTS_DIR)/ocsp-index.txt
	openssl ocsp -index $(CERTS_DIR)/ocsp-index.txt -rsigner $(CERTS_DIR)/ca.crt \
	  -rkey $(CERTS_DIR)/ca.key -CA $(CERTS_DIR)/ca.crt -issuer $(CERTS_DIR)/ca.crt \
	  -cert $(CERTS_DIR)/server.crt -ndays 30 -respout $@.tmp > /dev/null
	mv $@.tmp $@

# Paths follow the FHS: PREFIX=/usr puts the configuration in /etc, /usr/local in /usr/local/etc.
# DESTDIR stages the whole tree for a package. The installed configuration is
# etc/fastgateway.prod.json: workers as FG_USER, logs in LOGDIR, pid file and status socket in
# RUNDIR (the systemd unit names /run/fastgateway and /var/log/fastgateway itself).
SYSCONFDIR   ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
DOCDIR       ?= $(PREFIX)/share/doc/fastgateway
MANDIR       ?= $(PREFIX)/share/man
DASHDIR      ?= $(PREFIX)/share/fastgateway/dashboard
UNITDIR      ?= $(PREFIX)/lib/systemd/system
LOGROTATEDIR ?= /etc/logrotate.d
LOGDIR       ?= /var/log/fastgateway
RUNDIR       ?= /run/fastgateway
FG_USER      ?= fastgateway
INSTALL_SED = -e 's|/run/fastgateway/|$(RUNDIR)/|g' \
	-e 's|:-/run/fastgateway.pid}|:-$(RUNDIR)/fastgateway.pid}|' \
	-e 's|/var/log/fastgateway|$(LOGDIR)|g' \
	-e 's|/usr/local/sbin/fastgateway|$(PREFIX)/sbin/fastgateway|g' \
	-e 's|/usr/local/etc/fastgateway|$(SYSCONFDIR)/fastgateway|g' \
	-e 's|/usr/local/share/doc/fastgateway|$(DOCDIR)|g'
CONF_DEST = $(DESTDIR)$(SYSCONFDIR)/fastgateway/fastgateway.json

# The workers' user: FG_USER, created as a system user when missing (installing as root, no
# DESTDIR); when it cannot be created the configuration names "nobody" and says so. A staged
# install (DESTDIR) names FG_USER and leaves creating it to the package's scripts.
install: fastgateway fastgateway-agent
	install -D -m 0755 fastgateway $(DESTDIR)$(PREFIX)/sbin/fastgateway
	install -d $(DESTDIR)$(SYSCONFDIR)/fastgateway $(DESTDIR)$(SYSCONFDIR)/init.d \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(LOGDIR) $(DESTDIR)$(LOGROTATEDIR) \
	  $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	@u='$(FG_USER)'; \
	if [ -z '$(DESTDIR)' ] && ! getent passwd "$$u" >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && useradd --system --user-group --no-create-home \
	     --home-dir /nonexistent --shell /usr/sbin/nologin "$$u"; then \
	    echo "install: created system user $$u"; \
	  else echo "install: cannot create user $$u: workers run as nobody" >&2; u=nobody; fi; \
	fi; \
	dest='$(CONF_DEST)'; \
	if [ -e "$$dest" ]; then dest="$$dest.new"; \
	  echo "install: $(CONF_DEST) exists, kept; the new one is $$dest"; fi; \
	sed $(INSTALL_SED) -e "s|\"user\": \"fastgateway\"|\"user\": \"$$u\"|" \
	  etc/fastgateway.prod.json > "$$dest"; chmod 0644 "$$dest"
	sed $(INSTALL_SED) scripts/fastgateway.init > $(DESTDIR)$(SYSCONFDIR)/init.d/fastgateway
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/fastgateway
	sed $(INSTALL_SED) scripts/fastgateway.service > $(DESTDIR)$(UNITDIR)/fastgateway.service
	sed $(INSTALL_SED) scripts/fastgateway.logrotate > $(DESTDIR)$(LOGROTATEDIR)/fastgateway
	chmod 0644 $(DESTDIR)$(UNITDIR)/fastgateway.service $(DESTDIR)$(LOGROTATEDIR)/fastgateway
	sed $(INSTALL_SED) scripts/fastgateway-agent.init > $(DESTDIR)$(SYSCONFDIR)/init.d/fastgateway-agent
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/fastgateway-agent
	sed $(INSTALL_SED) etc/fastgateway-agent.service > $(DESTDIR)$(UNITDIR)/fastgateway-agent.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/fastgateway-agent.service
	install -m 0644 docs/man/fastgateway.8 $(DESTDIR)$(MANDIR)/man8/fastgateway.8
	install -m 0644 docs/man/fastgateway.json.5 $(DESTDIR)$(MANDIR)/man5/fastgateway.json.5
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(DASHDIR)
	install -m 0644 admin/dashboard/* $(DESTDIR)$(DASHDIR)/

FMT_SRCS = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FMT_SRCS)
lint:
	@clang-format --dry-run --Werror $(FMT_SRCS)
	@scripts/include-cycles.sh
	@cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -I. -D_GNU_SOURCE $(SRCS) $(AGENT_SRCS)

clean:
	rm -rf build fastgateway fastgateway-agent

-include $(DEPS)
