package image

// TemplateBase is the repository, under the internal registry's
// LibraryPrefix, of the shared base image the new-image template starts
// from: `serve --demo` (and so `make run`) publishes it there from the
// host's static busybox, so the template builds with no image hub.
const TemplateBase = LibraryPrefix + "/busybox"

// Template is the Dockerfile a new image starts with in the page: it builds
// offline, from the shared base image in the internal registry at
// registry (HOST:PORT), and its comments show how to start from an image
// hub instead.
func Template(registry string) string {
	return `# Built when you press BUILD; every line is checked when you save.
# This base is the platform's shared image in its own registry: it builds
# with no image hub. To start from a hub's image instead, name it, e.g.
#   FROM python:3.12-slim                  (Docker Hub)
#   FROM nvcr.io/nvidia/cuda:12.4.1-runtime-ubuntu22.04
# (for a private one, store a registry credential for its host).
FROM ` + registry + "/" + TemplateBase + `
RUN echo "hello from Slipway" > /hello
CMD ["cat", "/hello"]
`
}
