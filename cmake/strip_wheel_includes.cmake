# The PyPI ROS wheels export Python-binding targets whose include directories point
# at the wheel builder's /opt/python/... paths, which CMake rejects as non-existent.
# Strip them; on a normal ROS install nothing matches and this is a no-op.
# Included at the end of a CMakeLists (after its find_package calls).
get_property(_spinn_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(_t IN LISTS _spinn_imported)
  get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
  if(_inc)
    list(FILTER _inc EXCLUDE REGEX "^/opt/python/")
    set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
  endif()
endforeach()
